"""The tiny training world the trainer tests share: a 16 px generator (rosinality .pt) and images it made.

train_world(root, n) -> root holding g.pt and data/: n images as data/NNN.png, or with n_test > 0 the last
n_test under data/test/ and the rest under data/train/ with a labels.csv (file, split) naming them.
"""
import torch

from e4e.checkpoints import save_rosinality
from e4e.imageio import to_pil
from e4e.nets.stylegan2 import Generator, GeneratorConfig


def train_world(root, n: int, n_test: int = 0, normalise: bool = False, mean_samples: int = 2000):
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(size=16, style_dim=32, n_mlp=2, channel_max=16)).eval()
    save_rosinality(root / "g.pt", g, latent_avg=g.mean_latent(mean_samples))
    with torch.no_grad():
        img, _ = g(torch.randn(n, 32), randomize_noise=False)
    img = img / img.abs().amax(dim=(1, 2, 3), keepdim=True) if normalise else img.clamp(-1, 1)
    (root / "data").mkdir(parents=True, exist_ok=True)
    rows = ["file,split"]
    for i, im in enumerate(to_pil(img)):
        if not n_test:
            im.save(root / "data" / f"{i:03d}.png")
            continue
        split = "test" if i >= n - n_test else "train"
        (root / "data" / split).mkdir(exist_ok=True)
        im.save(root / "data" / split / f"{i}.png")
        rows.append(f"{split}/{i}.png,{split}")
    if n_test:
        (root / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
