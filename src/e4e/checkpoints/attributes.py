"""Attribute networks (e4e.nets.attributes) in e4e's safetensors format (native.py).

One part, "attributes": the network's state dict; its AttributeNetConfig as JSON in the metadata;
`info` (e.g. the training run and its test accuracies) kept beside it. `half=True` stores floating
tensors as fp16 (half the size; loading turns them back to fp32). Loading is strict: a file that is not
an attribute network, a config that does not build, or any missing/unexpected/misshapen tensor is one
line (E4EError) naming the file.
"""
from pathlib import Path

import torch

from e4e.checkpoints.io import load_state_dict_checked
from e4e.checkpoints.native import load_native, save_native
from e4e.errors import E4EError

PART = "attributes"


def save_attribute_net(path, net, info: dict | None = None, half: bool = False) -> Path:
    sd = net.state_dict()
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    save_native(path, {PART: sd}, {PART: net.cfg.to_dict()}, info=info)
    return Path(path)


def read_attribute_info(path) -> dict:
    """The `info` dict stored with a network (empty when none)."""
    return load_native(path)[3]


def load_attribute_net(path, device=None):
    """-> AttributeNet in eval mode (fp32) on `device` (default CPU)."""
    from e4e.nets.attributes import AttributeNet, AttributeNetConfig

    parts, configs, _, _ = load_native(path)
    if PART not in parts or PART not in configs:
        raise E4EError(f"{path}: an e4e checkpoint but not an attribute network (parts: {', '.join(parts) or 'none'})")
    try:
        cfg = AttributeNetConfig.from_dict(configs[PART])
    except (TypeError, E4EError) as e:
        raise E4EError(f"{path}: bad attribute network config ({e})") from None
    net = AttributeNet(cfg)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in parts[PART].items()}
    load_state_dict_checked(net, sd, f"{path}: attribute network")
    return net.eval().to(device or torch.device("cpu"))
