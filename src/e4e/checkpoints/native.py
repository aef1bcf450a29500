"""e4e's own format: one .safetensors file, tensors under '<part>.<key>', JSON configs in its metadata.

Readable without pickle; `e4e convert` turns official/rosinality/NVIDIA files into it and back.
"""
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from e4e.errors import E4EError, first_line
from e4e.outputs import atomic_write

FORMAT = "e4e.v1"


def save_native(path, parts: dict[str, dict], configs: dict[str, dict], tensors: dict | None = None,
                info: dict | None = None) -> None:
    """parts: name -> state dict; configs: name -> plain dict; tensors: extra top-level tensors."""
    flat = {f"{name}.{k}": v.detach().contiguous().cpu() for name, sd in parts.items() for k, v in sd.items()}
    for k, v in (tensors or {}).items():
        flat[k] = v.detach().contiguous().cpu()
    meta = {"format": FORMAT, "parts": json.dumps(sorted(parts)), "configs": json.dumps(configs),
            "info": json.dumps(info or {})}
    atomic_write(path, lambda tmp: save_file(flat, str(tmp), metadata=meta), mode="path")


def is_native(path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little")
            return 2 <= n < 100_000_000 and f.read(1) == b"{"
    except OSError:
        return False


def load_native(path) -> tuple[dict[str, dict], dict[str, dict], dict, dict]:
    """-> (parts, configs, extra tensors, info)."""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such file")
    try:
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        flat = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise E4EError(f"{path}: not a readable safetensors file ({first_line(e, limit=None)})") from None
    if meta.get("format") != FORMAT:
        raise E4EError(f"{path}: a safetensors file but not an e4e checkpoint (format {meta.get('format')!r})")
    names = _meta_json(meta, "parts", list, path)
    configs = _meta_json(meta, "configs", dict, path)
    info = _meta_json(meta, "info", dict, path, default="{}")
    if not all(isinstance(n, str) and n for n in names):
        raise E4EError(f"{path}: corrupt e4e metadata: 'parts' must be a list of names")
    if not all(isinstance(c, dict) for k, c in configs.items() if k != "output_size"):
        raise E4EError(f"{path}: corrupt e4e metadata: every entry of 'configs' must be a mapping")
    parts = {n: {} for n in names}
    extra = {}
    for k, v in flat.items():
        head, _, rest = k.partition(".")
        if head in parts and rest:
            parts[head][rest] = v
        else:
            extra[k] = v
    return parts, configs, extra, info


def _meta_json(meta: dict, key: str, kind: type, path, default: str | None = None):
    """One JSON entry of the safetensors metadata, of the expected type, or a one-line E4EError."""
    text = meta.get(key, default)
    if text is None:
        raise E4EError(f"{path}: corrupt e4e metadata: no {key!r} entry")
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        raise E4EError(f"{path}: corrupt e4e metadata: {key!r} is not valid JSON") from None
    if not isinstance(value, kind):
        raise E4EError(f"{path}: corrupt e4e metadata: {key!r} is a {type(value).__name__}, not a {kind.__name__}")
    return value
