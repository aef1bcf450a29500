"""Which implementation an op runs: one explicit name, passed down from the module that calls it.

    "ref"    plain PyTorch, eager: the reference every other form is tested against (CPU and GPU).
    "taps"   the form for torch.compile: the FIR filter of upfirdn2d as a sum of shifted slices, which
             inductor fuses with the pointwise ops around it; the other ops are already plain pointwise
             code there, so "taps" runs their reference.
    "gradfix" the reference, with every convolution (the FIR's depthwise one included) run through
             e4e.ops.conv's autograd Functions, whose backward passes are plain convolutions: for the
             steps that differentiate a gradient (the GAN trainer's lazy R1 and path length).
    "fold"   "gradfix", with every FIR filter that sits next to a convolution folded into it (one dense
             convolution with a 6x6 kernel instead of a 3x3 conv and a depthwise blur; e4e.ops.fir_conv),
             and the ToRGB skip upsample as a depthwise transposed convolution: for the same steps, where
             the depthwise blur's kernels (and their double backward) are the slow part.
    "triton" Triton kernels (e4e.ops.triton_kernels) on CUDA tensors, for inference. Where they cannot
             run (a CPU tensor, Triton not installed, or autograd recording through the op's inputs:
             the kernels have no backward) the op runs its reference instead; `triton_available()`
             says which will happen.

Nothing here is global state: a network stores the name it was configured with (for the generator,
Generator.configure(impl=...)), and e4e.fast chooses it for inference.
"""
import functools
import os

import torch

IMPLS = ("ref", "taps", "gradfix", "fold", "triton")


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {impl!r}")
    return impl


@functools.cache
def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # not installed, or a broken install: the reference runs
        return False
    return True


def triton_interpreted() -> bool:
    """TRITON_INTERPRET=1: Triton runs kernels on the CPU through its interpreter (tests only: slow)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_available(device: torch.device | str = "cuda") -> bool:
    """True when impl="triton" runs Triton kernels for tensors on `device`, False when it falls back."""
    device = torch.device(device)
    runs_here = device.type == "cuda" or (device.type == "cpu" and triton_interpreted())
    return runs_here and _triton_importable()  # no Triton import for a plain CPU run


def use_triton(impl: str, *tensors) -> bool:
    """impl says triton and the kernels can run on these tensors (same device, no autograd needed)."""
    if check_impl(impl) != "triton":
        return False
    ts = [t for t in tensors if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in ts):
        return False
    return triton_available(ts[0].device)
