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
        from e4e.checkpoints.official import inverter_from_official
        inv = inverter_from_official(ckpt, path.name)
        return inv.decoder, (inv.latent_avg[:1] if inv.latent_avg is not None else None)
    return from_rosinality_dict(ckpt, path)


def load_inverter(path, log=print):
    """An official e4e/pSp .pt or e4e's own .safetensors -> Inverter (eval mode, CPU)."""
    from pathlib import Path

    from e4e.errors import E4EError
    from e4e.inverter import Inverter
    from e4e.nets.encoders import EncoderConfig, build_encoder
    from e4e.nets.stylegan2 import Generator, GeneratorConfig
    path = Path(path)
    if is_native(path):
        parts, configs, extra, _ = load_native(path)
        if "encoder" not in parts or "generator" not in parts:
            raise E4EError(f"{path}: holds {', '.join(parts)}; an inverter needs an encoder and a generator")
        encoder = build_encoder(EncoderConfig(**configs["encoder"]))
        load_state_dict_checked(encoder, parts["encoder"], f"{path.name}: encoder")
        decoder = Generator(GeneratorConfig(**configs["generator"]))
        load_state_dict_checked(decoder, parts["generator"], f"{path.name}: generator")
        return Inverter(encoder, decoder, extra.get("latent_avg"), configs.get("output_size", 256)).eval()
    from e4e.checkpoints.official import inverter_from_official, is_official
    ckpt = torch_load(path)
    if not is_official(ckpt):
        raise E4EError(f"{path}: not an e4e/pSp checkpoint (expected 'state_dict' with encoder.* keys, "
                       "or an e4e .safetensors file)")
    return inverter_from_official(ckpt, path.name, log=log)


__all__ = ["load_generator", "load_inverter", "atomic_torch_save", "generator_from_state", "infer_generator_config", "is_native",
           "load_native", "load_rosinality", "load_state_dict_checked", "save_native", "save_rosinality",
           "torch_load"]
