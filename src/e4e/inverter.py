"""The inverter: encoder + generator, as the official pSp/e4e wrapper composes them.

image in [-1, 1] (B, 3, 256, 256) -> encoder codes (+ latent_avg) -> generator (W+) -> image, average-
pooled to 256x256 like the official `face_pool`. Noise is the generator's fixed buffers by default
(the official inference script's randomize_noise=False), so results are reproducible.
"""
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from e4e.errors import E4EError
from e4e.nets.encoders import EncoderConfig, build_encoder
from e4e.nets.stylegan2 import Generator, GeneratorConfig


class Inverter(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: Generator, latent_avg: torch.Tensor | None = None,
                 output_size: int | None = 256):
        super().__init__()
        if encoder.n_styles != decoder.n_latent:
            raise E4EError(
                f"encoder predicts {encoder.n_styles} styles (a {2 ** ((encoder.n_styles + 2) // 2)}px generator) "
                f"but the generator has {decoder.n_latent} ({decoder.size}px): use the encoder trained for this generator")
        if encoder.style_dim != decoder.style_dim:
            raise E4EError(f"encoder style_dim {encoder.style_dim} != generator style_dim {decoder.style_dim}")
        self.encoder, self.decoder = encoder, decoder
        if latent_avg is not None:
            latent_avg = latent_avg.reshape(-1, decoder.style_dim).float()
            if latent_avg.shape[0] == 1:
                latent_avg = latent_avg.repeat(decoder.n_latent, 1)
            if latent_avg.shape[0] != decoder.n_latent:
                raise E4EError(f"latent_avg has {latent_avg.shape[0]} styles, generator {decoder.n_latent}")
        self.register_buffer("latent_avg", latent_avg, persistent=False)
        self.output_size = output_size

    @property
    def input_size(self) -> int:
        return self.encoder.cfg.input_size

    def resize_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B,3,H,W) in [-1,1] -> W+ codes (B, n_styles, D), latent_avg added."""
        codes = self.encoder(self.resize_input(x))
        if self.latent_avg is not None:
            codes = codes + self.latent_avg.unsqueeze(0)
        return codes

    def decode(self, codes: torch.Tensor, resize: bool = True, randomize_noise: bool = False) -> torch.Tensor:
        images, _ = self.decoder(codes, input_is_latent=True, randomize_noise=randomize_noise)
        if resize and self.output_size:
            images = F.adaptive_avg_pool2d(images, (self.output_size, self.output_size))
        return images

    def forward(self, x, resize: bool = True, randomize_noise: bool = False):
        """-> (images, codes)."""
        codes = self.encode(x)
        return self.decode(codes, resize=resize, randomize_noise=randomize_noise), codes

    @torch.no_grad()
    def invert(self, images, resize: bool = False):
        """PIL images / paths / a (B,3,H,W) tensor -> (reconstructions in [-1,1], W+ codes), with the
        image conversion of `e4e invert` (e4e.pipeline: 8-bit RGB, centre-cropped to the input size)."""
        from e4e.pipeline import load_batch
        _, images, _ = load_batch(images, self.input_size)
        dev = next(self.parameters()).device
        return self(images.to(dev), resize=resize)

    # -- e4e's own format --------------------------------------------------------------------------
    def configs(self) -> dict:
        return {"encoder": asdict(self.encoder.cfg), "generator": asdict(self.decoder.cfg),
                "output_size": self.output_size}

    def save(self, path, info: dict | None = None, dtype: torch.dtype | None = None,
             with_generator: bool = True) -> None:
        """e4e's .safetensors. dtype (e.g. torch.float16): storage of the network weights (loading casts
        back to float32; latent_avg stays float32). with_generator=False writes the encoder alone: then
        info["generator_from"] must say where the generator is ("embedded" or a file beside this one)."""
        from e4e.checkpoints.native import save_native

        def cast(sd):
            return {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v for k, v in sd.items()}
        if not with_generator and not (info or {}).get("generator_from"):
            raise ValueError("an encoder-only file needs info['generator_from']")
        tensors = {"latent_avg": self.latent_avg.float()} if self.latent_avg is not None else {}
        parts = {"encoder": cast(self.encoder.state_dict())}
        if with_generator:
            parts["generator"] = cast(self.decoder.state_dict())
        save_native(path, parts, self.configs(), tensors=tensors, info=info)


def build_inverter(encoder_cfg: EncoderConfig, generator_cfg: GeneratorConfig, latent_avg=None,
                   output_size: int | None = 256) -> Inverter:
    return Inverter(build_encoder(encoder_cfg), Generator(generator_cfg), latent_avg, output_size)
