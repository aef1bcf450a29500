"""Discriminators: e4e's latent-code critic (and StyleGAN2's image discriminator).

Keys follow the official code so checkpoints load with strict=True: `LatentCodesDiscriminator` as in
e4e's models/discriminator.py (its `discriminator_state_dict`).
"""
from torch import nn


class LatentCodesDiscriminator(nn.Module):
    """MLP critic on single W codes (B, style_dim) -> (B, 1) logits; keys mlp.0/2/4/6 for n_mlp=4.

    e4e trains it adversarially against the encoder's codes (real = mapping(z)) so that they stay
    inside W; it uses ordinary nn.Linear, not the equalised-lr layers of StyleGAN.
    """

    def __init__(self, style_dim: int = 512, n_mlp: int = 4):
        super().__init__()
        self.style_dim = style_dim
        layers = []
        for _ in range(n_mlp - 1):
            layers += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(style_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, w):
        return self.mlp(w)
