"""Every checkpoint format e4e reads or writes, and the conversions between them.

- rosinality StyleGAN2 .pt (`g_ema`, `latent_avg`): rosinality.py
- official e4e / pSp checkpoints (`state_dict` with encoder./decoder., `opts`, `latent_avg`): official.py
- NVIDIA stylegan2-ada-pytorch .pkl, through a restricted unpickler: nvidia.py
- e4e's own safetensors format: native.py
- reading any of them by content, describing, converting between them (`e4e convert`): convert.py
"""
from e4e.checkpoints.io import load_state_dict_checked, sniff_format, stderr_log, torch_load
from e4e.checkpoints.native import is_native, load_native, save_native
from e4e.checkpoints.rosinality import (atomic_torch_save, from_rosinality_dict, generator_from_state, infer_generator_config,
                                        load_rosinality, save_rosinality)


def load_generator(path, compute_latent_avg: bool = False, log=stderr_log):
    """Any supported generator file (or an inverter's decoder) -> (Generator in eval mode, latent_avg (1, D)).

    latent_avg is the file's, else None; with compute_latent_avg a missing one is computed (the seeded mean
    of mapping(z) over 1e5 z, seconds on a CPU) and `log` (a callable, or None) is told so in one line.
    """
    from e4e.checkpoints.convert import HOW_COMPUTED, read_checkpoint, seeded_mean_latent
    ck = read_checkpoint(path, compute_latent_avg=False, log=log)
    avg = ck.generator_latent_avg
    if avg is None and compute_latent_avg:
        avg = seeded_mean_latent(ck.generator)
        if log:
            what = "no latent_avg" if ck.latent_avg is None else "no single latent_avg (it differs per style)"
            log(f"{ck.path.name}: {what} in the file; computed it as {HOW_COMPUTED}")
    return ck.generator, avg


def load_inverter(path, log=print):
    """An official e4e/pSp .pt or e4e's own .safetensors -> Inverter (eval mode, CPU)."""
    from pathlib import Path

    from e4e.checkpoints.convert import inverter_from_native
    from e4e.checkpoints.official import inverter_from_official, is_official
    from e4e.errors import E4EError
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such file")
    found = sniff_format(path)
    if found == "safetensors":
        parts, configs, extra, info = load_native(path)
        if "encoder" in parts and "generator" not in parts and info.get("generator_from"):
            parts, configs = _borrow_generator(path, info["generator_from"], parts, configs)
        if "encoder" not in parts or "generator" not in parts:
            raise E4EError(f"{path}: holds {', '.join(parts)}; an inverter needs an encoder and a generator")
        return inverter_from_native(parts, configs, extra, path.name)
    if found == "pickle":
        raise E4EError(f"{path}: a pickle (an NVIDIA .pkl generator?), not an inverter: give an official e4e/pSp .pt "
                       "or an e4e .safetensors file with an encoder")
    ckpt = torch_load(path)
    if not is_official(ckpt):
        raise E4EError(f"{path}: not an e4e/pSp checkpoint (expected 'state_dict' with encoder.* keys, "
                       "or an e4e .safetensors file)")
    return inverter_from_official(ckpt, path.name, log=log)


def _borrow_generator(path, source: str, parts: dict, configs: dict):
    """An encoder-only file (a second encoder for a shipped generator, e.g. the pSp baseline beside the
    embedded e4e model) names where its generator is: "embedded" or a file beside it."""
    from pathlib import Path

    from e4e.errors import E4EError
    if source == "embedded":
        from e4e.assets import default_inverter_path
        src = default_inverter_path()
    else:
        src = Path(path).parent / source
    if not src.is_file():
        raise E4EError(f"{path}: its generator is in {src}, which is missing")
    g_parts, g_configs, _, _ = load_native(src)
    if "generator" not in g_parts:
        raise E4EError(f"{path}: {src} holds no generator")
    return {**parts, "generator": g_parts["generator"]}, {**configs, "generator": g_configs["generator"]}


__all__ = ["load_generator", "load_inverter", "atomic_torch_save", "generator_from_state", "infer_generator_config", "is_native",
           "load_native", "load_rosinality", "load_state_dict_checked", "save_native", "save_rosinality",
           "sniff_format", "stderr_log", "torch_load"]
