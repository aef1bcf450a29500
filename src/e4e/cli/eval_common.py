"""What `e4e eval` and `e4e eval --pairs` (e4e.cli.eval_pairs) share: flag parsing, the metric networks
the flags ask for, the command line and device as reported, and the row cache in DIR/.cache."""
import platform
import shlex
from pathlib import Path

import torch

from e4e.errors import E4EError

CACHE = ".cache"


def parse_methods(text: str) -> tuple[str, ...]:
    from e4e.evaluate import METHODS
    methods = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise E4EError(f"--methods: unknown method(s) {', '.join(bad) or '(none given)'}; choose from "
                       f"{', '.join(METHODS)}")
    return methods


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise E4EError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise E4EError(f"{what}: give at least one number")
    return values


def build_scorers(args, device):
    """The perceptual distance, FID feature net and optional identity net the flags ask for."""
    from e4e.evaluate import Scorers
    from e4e.nets.efficientnet import EfficientNetFeatures, find_efficientnet_lite0_weights
    eff_weights = args.perceptual_weights or find_efficientnet_lite0_weights()
    eff_net = None
    if args.lpips_backbone or args.lpips_weights:
        if not (args.lpips_backbone and args.lpips_weights):
            raise E4EError("real LPIPS needs both --lpips-backbone PATH (torchvision weights) and "
                           "--lpips-weights PATH (the lpips package's lin weights)")
        from e4e.losses import LPIPS
        perceptual = LPIPS(args.lpips_net, args.lpips_backbone, args.lpips_weights)
        p_name = f"LPIPS ({args.lpips_net})"
    else:
        from e4e.losses import EfficientNetPerceptual
        perceptual = EfficientNetPerceptual(eff_weights)
        eff_net = perceptual.net
        p_name = "EfficientNet-Lite0 perceptual"
    if args.inception:
        from e4e.nets.inception import load_fid_inception
        features, f_name = load_fid_inception(args.inception), "Inception"
    else:
        if eff_net is None:
            from e4e.nets.efficientnet import load_efficientnet_lite0
            eff_net = load_efficientnet_lite0(eff_weights, "pass --perceptual-weights PATH (the FID proxy's net) "
                                                           "or --inception PATH")
        features, f_name = EfficientNetFeatures(eff_net), "EfficientNet-Lite0 proxy"
    identity = None
    if args.id_weights:
        from e4e.nets.identity import load_ir_se50
        identity = load_ir_se50(args.id_weights, hint="pass --id-weights PATH").to(device).eval()
    return Scorers(perceptual=perceptual.to(device).distance, features=features.to(device),
                   perceptual_name=p_name, features_name=f_name, identity=identity)


def command_line(args, parser) -> str:
    """The command as typed, rebuilt from the parsed options (those left at their defaults omitted)."""
    words = ["e4e", "eval", *map(str, args.images)]
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        value = getattr(args, action.dest, None)
        if value == action.default or value is None:
            continue
        flag = max(action.option_strings, key=len)
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def cached(out: Path, key: str, fp: dict) -> dict | None:
    """A row saved by an earlier run with the same fingerprint, else None (e4e.resultcache)."""
    from e4e.resultcache import cached as load
    return load(out / CACHE, key, fp)


def saved_entry(out: Path, key: str) -> dict | None:
    """The entry ({"fingerprint", "row"}) an earlier run saved under `key`, whatever its fingerprint."""
    from e4e.resultcache import saved
    return saved(out / CACHE, key)


def save_cached(out: Path, key: str, fp: dict, row: dict) -> None:
    from e4e.resultcache import save_cached as save
    save(out / CACHE, key, fp, row)
