"""Safe file reading and strict state-dict loading shared by every checkpoint format."""
import pickle
import re
import sys
from pathlib import Path

import torch

from e4e.checkpoints.strict import load_state_dict_checked  # noqa: F401 (re-exported: every format's loader)
from e4e.errors import E4EError, first_line


# The mean latent of a generator whose file has none: one seeded recipe everywhere (checkpoints, sampling,
# trainers), so the same weights always get the same truncation centre.
MEAN_LATENT_N = 100_000
MEAN_LATENT_SEED = 0


def seeded_mean_latent(generator) -> torch.Tensor:
    """(1, D): what a file without latent_avg gets, the same every time for the same weights."""
    return generator.mean_latent(MEAN_LATENT_N, seed=MEAN_LATENT_SEED)


# torch's legacy (pre-zip) format opens with a pickle of the magic number 0x1950a86a20f9469cfc6c
LEGACY_TORCH_MAGIC = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def sniff_format(path) -> str:
    """What a file holds, from its first bytes: 'safetensors', 'torch' (torch.save, zip or legacy),
    'pickle' (any other pickle, e.g. an NVIDIA .pkl) or 'unknown'. Names are not trusted."""
    from e4e.checkpoints.native import is_native
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return "unknown"
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and LEGACY_TORCH_MAGIC in head):
        return "torch"
    if is_native(path):
        return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def torch_load(path) -> object:
    """torch.load with weights_only=True, turning every failure into one readable line."""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise E4EError(f"{path}: empty file, not a checkpoint")
    found = sniff_format(path)
    # torch.load would reject these with long or cryptic messages; say what the file is instead.
    if found == "pickle":
        raise E4EError(f"{path}: a plain Python pickle, not a torch.save checkpoint (an NVIDIA stylegan2-ada-pytorch "
                       "generator .pkl is read where a generator is expected: 'e4e convert', 'e4e generate', "
                       "e4e.checkpoints.load_generator)")
    if found == "safetensors":
        raise E4EError(f"{path}: a safetensors file, not a torch.save checkpoint (e4e.checkpoints.load_generator "
                       "and load_inverter read e4e .safetensors files)")
    if found == "unknown":
        raise E4EError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)")
    if _zip_without_end(path):  # torch would say "[Errno 22] Invalid argument" or name miniz internals
        raise E4EError(f"{path}: truncated or corrupt checkpoint (a torch.save zip archive without its end "
                       f"record: the file was cut short at {path.stat().st_size} bytes; copy or save it again)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        first = first_line(e, limit=None)
        if "Weights only load failed" in text or "Unsupported global" in text:
            if "Unsupported operand" in text:
                raise E4EError(f"{path}: uses pickle opcodes torch.load(weights_only=True) cannot read (the legacy "
                               "format with pickle protocol 4+?); re-save it with torch.save's defaults") from None
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = found.group(1) if found else "objects other than tensors and plain containers"
            raise E4EError(f"{path}: refusing to unpickle {what}: checkpoints are read with torch.load(weights_only=True), "
                           "which allows only tensors and plain containers (re-save the tensors in a plain dict)") from None
        raise E4EError(f"{path}: not a PyTorch checkpoint ({first})") from None
    except Exception as e:  # torch raises many types (RuntimeError, KeyError, EOFError...) on bad bytes
        msg = first_line(e, limit=None)
        cut = ("zip archive", "central directory", "truncated", "unexpected EOF", "Invalid argument",
               "unpack requires a buffer", "index out of range")
        if isinstance(e, EOFError) or any(c in msg for c in cut):
            raise E4EError(f"{path}: truncated or corrupt checkpoint ({msg})") from None
        raise E4EError(f"{path}: cannot read checkpoint ({msg})") from None


def _zip_without_end(path: Path) -> bool:
    """A zip archive (torch.save's format) whose end-of-central-directory record is missing: truncated."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return False
        size = f.seek(0, 2)
        f.seek(max(0, size - (22 + 65535)))
        return b"PK\x05\x06" not in f.read()


def stderr_log(message: str) -> None:
    """Default `log` of the loaders: one line on stderr, keeping stdout for results."""
    print(message, file=sys.stderr)


def strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
