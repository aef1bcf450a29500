"""--device / device= values -> a torch.device, with one-line errors (for the API, commands and trainers)."""
import torch

from e4e.errors import E4EError


def resolve_device(device=None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise E4EError(f"device {device!r}: not a device (use cpu, cuda, cuda:1, mps ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise E4EError(f"device {device!r}: CUDA is not available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise E4EError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise E4EError(f"device {device!r}: unsupported device type (use cpu or cuda)")
    return dev
