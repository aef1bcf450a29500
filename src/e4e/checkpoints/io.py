"""Safe file reading and strict state-dict loading shared by every checkpoint format."""
import pickle
from pathlib import Path

import torch
from torch import nn

from e4e.errors import E4EError


def torch_load(path) -> object:
    """torch.load with weights_only=True, turning every failure into one readable line."""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise E4EError(f"{path}: empty file, not a checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
            raise E4EError(f"{path}: holds Python objects other than tensors and plain containers; refusing "
                           "to unpickle it (if it is an NVIDIA .pkl use 'e4e convert')") from None
        raise E4EError(f"{path}: not a PyTorch checkpoint ({first})") from None
    except Exception as e:  # torch raises many types (RuntimeError, KeyError, EOFError...) on bad bytes
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, EOFError) or "zip archive" in msg or "central directory" in msg or "truncated" in msg:
            raise E4EError(f"{path}: truncated or corrupt checkpoint ({msg})") from None
        raise E4EError(f"{path}: cannot read checkpoint ({msg})") from None


def load_state_dict_checked(module: nn.Module, state: dict, what: str) -> None:
    """load_state_dict(strict=True) with one-line errors: first bad shape, or missing/unexpected keys."""
    own = module.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise E4EError(f"{what}: shape mismatch at '{key}': checkpoint {tuple(value.shape)}, "
                           f"model {tuple(own[key].shape)}")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (first: {', '.join(unexpected[:3])})")
        raise E4EError(f"{what}: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)


def strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
