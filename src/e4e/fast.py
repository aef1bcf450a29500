"""Fast inference: precision, memory layout, modconv form and torch.compile for an Inverter.

fp32 is the reference (the numbers the official code gives). The other settings trade a little precision
for speed; bench/bench.py prints each one's max relative error against fp32 next to its speed:

- tf32: TF32 tensor cores for convs and matmuls (Ampere and later); images within ~2e-3 of fp32.
- bf16: bfloat16 autocast; images within ~3e-2 of fp32, codes within ~1e-4.
- compile: torch.compile of the whole encode+decode (the FIR filters become fusable taps, every
  elementwise op is fused); the first batch of each shape compiles (about a minute for the FFHQ model).
"""
import contextlib

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


@contextlib.contextmanager
def precision_scope(precision: str, device: torch.device):
    """TF32 switches are global in PyTorch: set them for the duration only."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def prepare(inv, precision: str = "fp32", compile: bool = False, batch_size: int | None = None,
            compile_mode: str | None = None):
    """-> fn(x) -> (images at the generator's resolution, W+ codes) under no_grad.

    On GPU the generator uses the shared-weight modulated conv (one weight for the whole batch) and the
    encoder runs NHWC; on CPU the reference forms stay (they are faster there). With compile and a
    batch_size, smaller batches (the last one of a folder) are padded to batch_size so that they reuse
    the compiled graph instead of compiling another (a minute at the FFHQ config). compile_mode: a
    torch.compile mode; by default CUDA graphs on GPU ("reduce-overhead"), "default" on CPU.
    """
    dev = next(inv.parameters()).device
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if dev.type == "cuda":
        inv.decoder.use_grouped_conv(False)
        inv.encoder.to(memory_format=torch.channels_last)

    def forward(x):
        codes = inv.encode(x)
        return inv.decode(codes, resize=False), codes

    # CUDA graphs (reduce-overhead) took batch 8 at the FFHQ config from 325 to 403 images/s on an H100
    mode = compile_mode or ("reduce-overhead" if dev.type == "cuda" else "default")
    step = torch.compile(forward, mode=mode) if compile else forward

    @torch.no_grad()
    def run(x):
        n = x.shape[0]
        if compile and batch_size and n < batch_size:
            x = torch.cat([x, x[-1:].expand(batch_size - n, *x.shape[1:])])
        if compile and dev.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        with precision_scope(precision, dev):
            images, codes = step(x)
        # a CUDA graph's outputs live in its memory pool and are overwritten by the next call
        return images[:n].float().clone(), codes[:n].float().clone()
    return run
