"""rosinality stylegan2-pytorch checkpoints (`{'g_ema': ..., 'latent_avg'?: ...}`), the official e4e's format."""
import re
from pathlib import Path

import torch

from e4e.checkpoints.io import load_state_dict_checked, torch_load
from e4e.errors import E4EError
from e4e.nets.stylegan2 import BASE_CHANNELS, Generator, GeneratorConfig
from e4e.outputs import atomic_torch_save  # noqa: F401  (re-exported: trainers import it from here)


def infer_generator_config(state: dict, where: str = "generator") -> GeneratorConfig:
    """Read size, mapping depth, style_dim and widths from a g_ema state dict's keys and shapes."""
    try:
        style_keys = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
        n_mlp = len(style_keys)
        style_dim = state["style.1.weight"].shape[1]
        n_noise = sum(1 for k in state if k.startswith("noises.noise_"))
        widths = {4: state["input.input"].shape[1]}
        for j in range(len([k for k in state if re.fullmatch(r"to_rgbs\.\d+\.bias", k)])):
            widths[2 ** (j + 3)] = state[f"convs.{2 * j}.conv.weight"].shape[1]
    except KeyError as e:
        raise E4EError(f"{where}: not a rosinality StyleGAN2 generator (no key {e})") from None
    log_size = (n_noise - 1) // 2 + 2
    size = 2 ** log_size
    if n_noise != (log_size - 2) * 2 + 1 or max(widths) != size:
        raise E4EError(f"{where}: inconsistent generator layout ({n_noise} noise buffers, {len(widths)} resolutions)")
    for cm in (2, 1, 4):
        for cap in sorted({512, *widths.values()}, reverse=True):
            cfg = GeneratorConfig(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=cm, channel_max=cap)
            if all(cfg.channels(r) == c for r, c in widths.items()):
                return cfg
    raise E4EError(f"{where}: channel widths {widths} match no channel_multiplier / channel_max "
                   f"(expected BASE_CHANNELS {BASE_CHANNELS} scaled and capped)")


def generator_from_state(state: dict, where: str = "generator") -> Generator:
    g = Generator(infer_generator_config(state, where))
    load_state_dict_checked(g, state, where)
    return g.eval()


def load_rosinality(path) -> tuple[Generator, torch.Tensor | None]:
    """Returns (g_ema in eval mode, latent_avg (1, style_dim) or None)."""
    return from_rosinality_dict(torch_load(path), path)


def from_rosinality_dict(ckpt, path) -> tuple[Generator, torch.Tensor | None]:
    if not isinstance(ckpt, dict):
        raise E4EError(f"{path}: not a rosinality checkpoint (a {type(ckpt).__name__}, expected a dict with 'g_ema')")
    key = "g_ema" if "g_ema" in ckpt else "g" if "g" in ckpt else None
    if key is None:
        if "d" in ckpt:
            raise E4EError(f"{path}: holds only a discriminator ('d'), no generator ('g_ema')")
        if "state_dict" in ckpt and any(k.startswith("encoder.") for k in ckpt["state_dict"]):
            raise E4EError(f"{path}: is an e4e/pSp encoder checkpoint, not a StyleGAN2 generator")
        if "style.1.weight" in ckpt:  # a bare generator state dict
            ckpt, key = {"g_ema": ckpt}, "g_ema"
        else:
            raise E4EError(f"{path}: no 'g_ema' generator in checkpoint (keys: {', '.join(list(ckpt)[:6])})")
    g = generator_from_state(ckpt[key], f"{Path(path).name}:{key}")
    avg = ckpt.get("latent_avg")
    if avg is not None:
        avg = avg.float().reshape(-1, g.style_dim)[:1]
    return g, avg


def save_rosinality(path, generator: Generator, latent_avg: torch.Tensor | None = None, **extra) -> None:
    ckpt = {"g_ema": generator.state_dict(), **extra}
    if latent_avg is not None:
        ckpt["latent_avg"] = latent_avg.reshape(-1)
    atomic_torch_save(ckpt, path)
