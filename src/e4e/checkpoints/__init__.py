"""Every checkpoint format e4e reads or writes, and the conversions between them.

- rosinality StyleGAN2 .pt (`g_ema`, `latent_avg`): rosinality.py
- official e4e / pSp checkpoints (`state_dict` with encoder./decoder., `opts`, `latent_avg`): official.py
- NVIDIA stylegan2-ada-pytorch .pkl, through a restricted unpickler: nvidia.py
- e4e's own safetensors format: native.py
"""
from e4e.checkpoints.io import load_state_dict_checked, torch_load
from e4e.checkpoints.native import is_native, load_native, save_native
from e4e.checkpoints.rosinality import (atomic_torch_save, from_rosinality_dict, generator_from_state, infer_generator_config,
                                        load_rosinality, save_rosinality)



def load_generator(path):
    """Any supported generator file -> (Generator in eval mode, latent_avg (1, D) or None)."""
    from pathlib import Path

    from e4e.errors import E4EError
    from e4e.nets.stylegan2 import Generator, GeneratorConfig
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such file")
    if is_native(path):
        parts, configs, extra, _ = load_native(path)
        if "generator" not in parts:
            raise E4EError(f"{path}: e4e checkpoint without a generator")
        g = Generator(GeneratorConfig(**configs["generator"]))
        load_state_dict_checked(g, parts["generator"], f"{path.name}:generator")
        return g.eval(), extra.get("latent_avg")
    if path.suffix == ".pkl":
        from e4e.checkpoints.nvidia import load_nvidia_generator
        return load_nvidia_generator(path)
    ckpt = torch_load(path)
    if isinstance(ckpt, dict) and "state_dict" in ckpt and any(k.startswith("decoder.") for k in ckpt["state_dict"]):
        from e4e.checkpoints.official import load_official
        inv = load_official(path)
        return inv.decoder, inv.latent_avg
    return from_rosinality_dict(ckpt, path)


__all__ = ["load_generator", "atomic_torch_save", "generator_from_state", "infer_generator_config", "is_native",
           "load_native", "load_rosinality", "load_state_dict_checked", "save_native", "save_rosinality",
           "torch_load"]
