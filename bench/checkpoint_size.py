"""Size of one `e4e train` checkpoint (checkpoints/last.pt) for the shipped recipes, from parameter counts.

A checkpoint holds the encoder and generator weights (float32), the encoder optimiser's state (Ranger:
exp_avg, exp_avg_sq and slow_buffer per parameter, 3x the encoder; Adam: 2x) and, with the latent
discriminator on, its weights and Adam state (3x). Usage: python bench/checkpoint_size.py
"""
from e4e.nets.discriminators import LatentCodesDiscriminator
from e4e.nets.encoders import EncoderConfig, build_encoder
from e4e.nets.stylegan2 import Generator, GeneratorConfig


def count(module) -> int:
    return sum(t.numel() for t in module.state_dict().values())


RECIPES = {  # name: (encoder config, generator config, latent discriminator on)
    "ffhq (configs/ffhq.yaml)": (EncoderConfig(), GeneratorConfig(size=1024), True),
    "emoji (configs/emoji.yaml, the embedded model's shape)": (
        EncoderConfig(stylegan_size=64, style_dim=128, widths=(32, 48, 64, 128), units=(2, 2, 3, 2), input_size=64),
        GeneratorConfig(size=64, style_dim=128, n_mlp=4, channel_max=128), True),
}

for name, (ecfg, gcfg, disc) in RECIPES.items():
    enc, gen = count(build_encoder(ecfg)), count(Generator(gcfg))
    d = count(LatentCodesDiscriminator(gcfg.style_dim)) if disc else 0
    total = 4 * (enc * (1 + 3) + gen + d * 3)
    print(f"{name}: encoder {enc / 1e6:.1f} M, generator {gen / 1e6:.1f} M, discriminator {d / 1e6:.2f} M values "
          f"-> one checkpoint about {total / 2**20:.0f} MiB (inverter.safetensors: {4 * (enc + gen) / 2**20:.0f} MiB)")
