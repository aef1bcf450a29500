"""YAML/JSON files and `key=value` overrides -> a training dataclass, with one-line errors."""
import dataclasses
import json
import typing
from pathlib import Path

import yaml

from e4e.errors import E4EError


def _coerce(name: str, value, typ):
    origin = typing.get_origin(typ)
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if value is None:
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        typ = args[0]
        origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if typ in (int, float, str):
            if typ is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return typ(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                value = yaml.safe_load(value)
            inner = typing.get_args(typ)[0] if typing.get_args(typ) else str
            return [_coerce(name, v, inner) for v in value]
        if origin is dict or typ is dict:
            return yaml.safe_load(value) if isinstance(value, str) else dict(value)
    except (ValueError, TypeError):
        raise E4EError(f"config: {name}={value!r} is not a valid {getattr(typ, '__name__', typ)}") from None
    return value


def build_config(cls, path: str | None = None, overrides: list[str] | None = None, base: dict | None = None):
    """Defaults <- base (e.g. a dataset preset) <- file <- overrides."""
    values = dict(base or {})
    if path:
        p = Path(path)
        if not p.is_file():
            raise E4EError(f"{p}: config file not found")
        try:
            text = p.read_text()
            loaded = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise E4EError(f"{p}: cannot parse config ({str(e).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise E4EError(f"{p}: config must be a mapping of option: value")
        values.update(loaded or {})
    for item in overrides or []:
        if "=" not in item:
            raise E4EError(f"override {item!r}: expected key=value")
        k, v = item.split("=", 1)
        values[k.strip().replace("-", "_")] = yaml.safe_load(v) if v.strip() else ""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise E4EError(f"config: unknown option(s) {', '.join(sorted(unknown))} for {cls.__name__}")
    try:
        return cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})
    except (ValueError, TypeError) as e:
        raise E4EError(f"config: {e}") from None
