"""A state dict as numbered safetensors parts of bounded size: `NAME.part0.safetensors`, `NAME.part1...`.

For moving training state through channels that cap file sizes (the GPU machine returns files of at most
16 MiB; git hosts dislike large blobs). `dtype` (e.g. torch.float16) casts floating tensors on the way
out; `load_parts` returns the tensors as stored. Each part carries the total part count in its
metadata, so a missing part is an error, not a silently partial state dict.
"""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from e4e.errors import E4EError


def save_parts(state: dict, prefix, max_bytes: int = 15 * 2 ** 20, dtype: torch.dtype | None = None) -> list[Path]:
    prefix = Path(prefix)
    groups, cur, size = [], {}, 0
    for k, v in state.items():
        t = v.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        t = t.contiguous()
        n = t.numel() * t.element_size()
        if cur and size + n > max_bytes:
            groups.append(cur)
            cur, size = {}, 0
        cur[k], size = t, size + n
    groups.append(cur)
    paths = []
    for i, g in enumerate(groups):
        p = prefix.with_name(f"{prefix.name}.part{i}.safetensors")
        save_file(g, str(p), metadata={"e4e_parts": json.dumps({"index": i, "count": len(groups)})})
        paths.append(p)
    return paths


def load_parts(prefix) -> dict:
    from safetensors import safe_open
    prefix = Path(prefix)
    first = prefix.with_name(f"{prefix.name}.part0.safetensors")
    if not first.is_file():
        raise E4EError(f"{first}: no such file (parts of {prefix.name})")
    with safe_open(str(first), "pt") as f:
        count = json.loads((f.metadata() or {}).get("e4e_parts", "{}")).get("count")
    if not count:
        raise E4EError(f"{first}: not a part file written by e4e.checkpoints.parts")
    state = {}
    for i in range(count):
        p = prefix.with_name(f"{prefix.name}.part{i}.safetensors")
        if not p.is_file():
            raise E4EError(f"{p}: missing (part {i} of {count})")
        state.update(load_file(str(p)))
    return state
