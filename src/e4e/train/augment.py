"""DiffAugment (Zhao et al. 2020): differentiable colour / translation / cutout applied to every image
the discriminator sees, real and fake, so a small dataset does not let D memorise it."""
import torch
import torch.nn.functional as F


def _colour(x, g):
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, generator=g, device=x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, generator=g, device=x.device) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, generator=g, device=x.device) + 0.5) + mean


def _translation(x, g, ratio=0.125):
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), generator=g, device=x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=g, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = (gy[None] + ty + 1).clamp(0, h + 1)
    gx = (gx[None] + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    idx = (gy * (w + 2) + gx).view(b, 1, -1).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, idx).view_as(x)


def _cutout(x, g, ratio=0.5):
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    y0 = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=g, device=x.device) - ch // 2
    x0 = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=g, device=x.device) - cw // 2
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    hole = (gy[None] >= y0) & (gy[None] < y0 + ch) & (gx[None] >= x0) & (gx[None] < x0 + cw)
    return x * (~hole).to(x.dtype)[:, None]


POLICIES = {"color": _colour, "translation": _translation, "cutout": _cutout}


def diff_augment(x: torch.Tensor, policy: str = "color,translation,cutout", generator=None) -> torch.Tensor:
    for name in filter(None, policy.split(",")):
        x = POLICIES[name](x, generator)
    return x
