"""YAML/JSON files and `key=value` overrides -> a training dataclass, with one-line errors; and the
dataclass's own documentation (the comment after each field) for generated --help texts."""
import dataclasses
import inspect
import io
import json
import tokenize
import typing
from pathlib import Path

import yaml

from e4e.errors import E4EError, first_line


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
        if typ is str and isinstance(value, bool):
            # YAML 1.1 reads a bare on/off (yes/no, true/false) as a boolean: a string option means on/off
            return "on" if value else "off"
        if typ in (int, float, str):
            if typ is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return typ(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                value = yaml.safe_load(value)
                if isinstance(value, str):  # a bare comma list: 32,48,64,128
                    value = [v.strip() for v in value.split(",") if v.strip()]
                elif not isinstance(value, (list, tuple)):
                    value = [value]
            inner = typing.get_args(typ)[0] if typing.get_args(typ) else str
            return [_coerce(name, v, inner) for v in value]
        if origin is dict or typ is dict:
            return yaml.safe_load(value) if isinstance(value, str) else dict(value)
    except (ValueError, TypeError):
        raise E4EError(f"config: {name}={value!r} is not a valid {getattr(typ, '__name__', typ)}") from None
    return value


def field_help(cls) -> dict[str, str]:
    """{field: the comment after it in the class body} (empty where the source is unavailable)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out, current = {}, None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and current is None:
            current = tok.string
        elif tok.type == tokenize.COMMENT and current:
            out[current] = tok.string.lstrip("# ").strip()
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            current = None
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in out.items() if k in names}


def read_config_file(path) -> dict:
    """A YAML or JSON mapping of option: value (an empty file is {})."""
    p = Path(path)
    if not p.is_file():
        raise E4EError(f"{p}: config file not found")
    try:
        text = p.read_text()
        loaded = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise E4EError(f"{p}: cannot parse config ({first_line(e, limit=None)})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise E4EError(f"{p}: config must be a mapping of option: value")
    return loaded or {}


def to_yaml(cfg) -> str:
    """A dataclass instance as the YAML a config file would hold."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, default_flow_style=False)


# The shared vocabulary of the trainers: official e4e option names (left) and the short names that
# train-generator and train-classifier grew up with (right). Each trainer accepts both, in flags, --set
# and config files; a config class's own field name is the one its run folder records.
VOCABULARY = {"exp_dir": "out", "max_steps": "steps", "batch_size": "batch", "board_interval": "log_every",
              "save_interval": "save_every", "image_interval": "sample_every"}


def aliases_of(cls) -> dict[str, str]:
    """{other name: field} for a config class: both directions of VOCABULARY where the class has the
    field, and the class's own ALIASES (e.g. e4e train's older --generator)."""
    fields = {f.name for f in dataclasses.fields(cls)} - set(getattr(cls, "VOCABULARY_SKIP", ()))
    out = {a: b for a, b in VOCABULARY.items() if b in fields and a not in fields}
    out.update({b: a for a, b in VOCABULARY.items() if a in fields and b not in fields})
    out.update({a: b for a, b in getattr(cls, "ALIASES", {}).items() if b in fields})
    return out


def build_config(cls, path: str | None = None, overrides: list[str] | None = None, base: dict | None = None,
                 ignore: tuple = ()):
    """Defaults <- base (e.g. a dataset preset) <- file <- overrides. Keys in `ignore` (values a run
    derives and records, like opts.json's progressive_steps) are dropped from the file."""
    values = dict(base or {})
    if path:
        values.update({k: v for k, v in read_config_file(path).items() if k not in ignore})
    for item in overrides or []:
        if "=" not in item:
            raise E4EError(f"override {item!r}: expected key=value")
        k, v = item.split("=", 1)
        values[k.strip().replace("-", "_")] = yaml.safe_load(v) if v.strip() else ""
    if ignore:
        values = {k: v for k, v in values.items() if k not in ignore}
    aliases = aliases_of(cls)
    values = {aliases.get(k, k): v for k, v in values.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise E4EError(f"config: unknown option(s) {', '.join(sorted(unknown))} for {cls.__name__}")
    try:
        return cls(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})
    except (ValueError, TypeError) as e:
        raise E4EError(f"config: {e}") from None
