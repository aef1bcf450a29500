"""DiffAugment (Zhao et al. 2020): differentiable colour / translation / cutout applied to every image
the discriminator sees, real and fake, so a small dataset does not let D memorise it.

Sampling and applying are separate: `sample_augment(policy, b, h, w, generator, device)` draws every
random number of one call into a dict of tensors, `apply_augment(x, policy, params)` is a pure function
of x and those tensors. The fast trainer draws the parameters outside its compiled step (a torch.Generator
cannot enter a compiled graph) and hands them in; `diff_augment` is the two together.
"""
import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def _rand(shape, g, device):
    return torch.rand(shape, generator=g, device=device)


def sample_augment(policy: str, b: int, h: int, w: int, generator=None, device="cpu") -> dict:
    """All random draws of one DiffAugment call, in the order `diff_augment` always drew them."""
    p = {}
    for name in filter(None, policy.split(",")):
        if name not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy {name!r}: use {', '.join(POLICIES)}")
        if name == "color":
            p["brightness"] = _rand((b, 1, 1, 1), generator, device) - 0.5
            p["saturation"] = _rand((b, 1, 1, 1), generator, device) * 2
            p["contrast"] = _rand((b, 1, 1, 1), generator, device) + 0.5
        elif name == "translation":
            sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
            p["ty"] = torch.randint(-sh, sh + 1, (b, 1, 1), generator=generator, device=device)
            p["tx"] = torch.randint(-sw, sw + 1, (b, 1, 1), generator=generator, device=device)
        else:
            ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
            p["cy"] = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=generator, device=device) - ch // 2
            p["cx"] = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=generator, device=device) - cw // 2
    return p


def _colour(x, p):
    x = x + p["brightness"].to(x.dtype)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * p["saturation"].to(x.dtype) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * p["contrast"].to(x.dtype) + mean


def _translation(x, p):
    b, _, h, w = x.shape
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = (gy[None] + p["ty"] + 1).clamp(0, h + 1)
    gx = (gx[None] + p["tx"] + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    idx = (gy * (w + 2) + gx).view(b, 1, -1).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, idx).view_as(x)


def _cutout(x, p):
    _, _, h, w = x.shape
    ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    y0, x0 = p["cy"], p["cx"]
    hole = (gy[None] >= y0) & (gy[None] < y0 + ch) & (gx[None] >= x0) & (gx[None] < x0 + cw)
    return x * (~hole).to(x.dtype)[:, None]


_APPLY = {"color": _colour, "translation": _translation, "cutout": _cutout}


def apply_augment(x: torch.Tensor, policy: str, params: dict) -> torch.Tensor:
    for name in filter(None, policy.split(",")):
        x = _APPLY[name](x, params)
    return x


def diff_augment(x: torch.Tensor, policy: str = "color,translation,cutout", generator=None) -> torch.Tensor:
    b, _, h, w = x.shape
    return apply_augment(x, policy, sample_augment(policy, b, h, w, generator, x.device))
