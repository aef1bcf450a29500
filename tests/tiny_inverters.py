"""Tiny inverters and odd image files for the invert/edit command and API tests (seconds on a CPU)."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from e4e.inverter import build_inverter
from e4e.nets.encoders import EncoderConfig
from e4e.nets.stylegan2 import GeneratorConfig


def tiny_inverter(seed: int = 0, size: int = 32):
    torch.manual_seed(seed)
    enc = EncoderConfig(kind="e4e", stylegan_size=size, style_dim=32, widths=(8, 16, 24, 32), units=(1, 1, 1, 1),
                        input_size=32, mode="ir")
    gen = GeneratorConfig(size=size, style_dim=32, n_mlp=2, channel_max=16)
    return build_inverter(enc, gen, latent_avg=0.1 * torch.randn(1, 32)).eval()


def save_tiny(path: Path, seed: int = 0, size: int = 32) -> Path:
    tiny_inverter(seed, size).save(path)
    return path


def make_images(folder: Path, n_good: int = 3) -> dict[str, list[str]]:
    """n_good RGB images (non-square), three that need converting, and two that must be skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    good = []
    for i in range(n_good):
        Image.fromarray(rng.integers(0, 256, (36 + 4 * i, 44, 3), dtype=np.uint8)).save(folder / f"rgb{i}.png")
        good.append(f"rgb{i}")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8)).save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (40, 40)).astype(np.uint16)).save(folder / "deep16.png")
    (folder / "notes.png").write_bytes(b"not an image at all")
    data = (folder / "rgb0.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    return {"good": good, "converted": ["deep16", "gray", "rgba"], "bad": ["notes", "truncated"]}


def float64_reference(inv, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(images at the generator's size, W+ codes) in float64, composed here from the parts rather than by
    the Inverter: codes = encoder(x) + latent_avg, images = decoder.synthesis(codes) with the stored noise.
    x must already be at the encoder's input size. Computed on the CPU whatever the device of inv and x
    (float64 on a GPU is slow and takes other kernels), returned on the CPU."""
    import copy
    enc = copy.deepcopy(inv.encoder).cpu().double().eval()
    dec = copy.deepcopy(inv.decoder).cpu().double().eval().use_grouped_conv(True).use_channels_last(False)
    assert x.shape[-1] == inv.input_size
    with torch.no_grad():
        codes = enc(x.double().cpu())
        if inv.latent_avg is not None:
            codes = codes + inv.latent_avg.double().cpu()[None]
        return dec.synthesis(codes), codes
