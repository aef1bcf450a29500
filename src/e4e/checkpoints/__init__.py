"""Every checkpoint format e4e reads or writes, and the conversions between them.

- rosinality StyleGAN2 .pt (`g_ema`, `latent_avg`): rosinality.py
- official e4e / pSp checkpoints (`state_dict` with encoder./decoder., `opts`, `latent_avg`): official.py
- NVIDIA stylegan2-ada-pytorch .pkl, through a restricted unpickler: nvidia.py
- e4e's own safetensors format: native.py
"""
from e4e.checkpoints.io import load_state_dict_checked, torch_load
from e4e.checkpoints.native import is_native, load_native, save_native
from e4e.checkpoints.rosinality import (atomic_torch_save, generator_from_state, infer_generator_config,
                                        load_rosinality, save_rosinality)

__all__ = ["atomic_torch_save", "generator_from_state", "infer_generator_config", "is_native",
           "load_native", "load_rosinality", "load_state_dict_checked", "save_native", "save_rosinality",
           "torch_load"]
