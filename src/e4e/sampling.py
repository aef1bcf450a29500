"""Sampling a generator at given seeds (what `e4e generate` writes).

In: a Generator, integer seeds, truncation psi in [0, 1] (towards latent_avg, computed when not given).
Out: images (N, 3, H, W) in about [-1, 1] and their W codes (N, style_dim). z for seed s is
torch.randn(style_dim) from a torch.Generator seeded with s, so a seed gives the same image in any
batch and on any device.
"""
import torch
from tqdm import tqdm


@torch.no_grad()
def sample(generator, seeds, truncation: float = 1.0, latent_avg=None, device="cpu", batch_size: int = 8,
           progress: bool = True):
    """-> (images (N,3,H,W) in about [-1,1], W latents (N, style_dim))."""
    generator = generator.to(device).eval()
    if truncation < 1 and latent_avg is None:
        latent_avg = generator.mean_latent(100_000, seed=0)  # = checkpoints.io.seeded_mean_latent (a layer up)
    images, ws = [], []
    for i in tqdm(range(0, len(seeds), batch_size), desc="generate", unit="batch", leave=False, disable=not progress):
        chunk = seeds[i:i + batch_size]
        z = torch.stack([torch.randn(generator.style_dim, generator=torch.Generator().manual_seed(s)) for s in chunk])
        w = generator.mapping(z.to(device))
        if truncation < 1:
            w = latent_avg.to(device) + truncation * (w - latent_avg.to(device))
        img, _ = generator(w, input_is_latent=True, randomize_noise=False)
        images.append(img.cpu())
        ws.append(w.cpu())
    return torch.cat(images), torch.cat(ws)
