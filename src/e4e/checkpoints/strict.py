"""Strict state-dict loading with a one-line reason, for every loader of a weight file.

In: a module (or its state dict) and the tensors read from a file. Out: nothing, or the first reason
they do not fit, as one line: a value that is not a tensor, a shape mismatch, missing keys, unexpected
keys. It knows nn.Module and no model, so nets/ (the loss networks' loaders) and checkpoints/ (every
format) share it; e4e.checkpoints.io re-exports `load_state_dict_checked`.
"""
import torch
from torch import nn

from e4e.errors import E4EError


def mismatch(own: dict, state: dict, optional: tuple[str, ...] = ()) -> str | None:
    """None if `state` has exactly the keys and shapes of `own`, else one line saying the first problem.
    Keys of `own` ending in one of `optional` (e.g. "num_batches_tracked") may be absent from `state`."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            return f"'{key}' is not a tensor ({type(value).__name__})"
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            return f"shape mismatch at '{key}': file {tuple(value.shape)}, model {tuple(own[key].shape)}"
    missing = [k for k in own if k not in state and not k.endswith(optional or ("\0",))]
    unexpected = [k for k in state if k not in own]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (first: {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (first: {', '.join(unexpected[:3])})")
    return "; ".join(parts) or None


def load_state_dict_checked(module: nn.Module, state: dict, what: str, optional: tuple[str, ...] = ()) -> None:
    """module.load_state_dict(state, strict=True), or E4EError "{what}: {the first problem}". Absent
    `optional` keys keep the module's own values."""
    own = module.state_dict()
    detail = mismatch(own, state, optional)
    if detail:
        raise E4EError(f"{what}: {detail}")
    module.load_state_dict({**{k: v for k, v in own.items() if k not in state}, **state}, strict=True)
