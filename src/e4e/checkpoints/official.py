"""Official e4e / pSp checkpoints: {'state_dict': encoder.*/decoder.*, 'opts', 'latent_avg'?, ...}."""
from pathlib import Path

import torch

from e4e.checkpoints.io import load_state_dict_checked, seeded_mean_latent, strip_prefix, torch_load
from e4e.checkpoints.rosinality import atomic_torch_save, infer_generator_config
from e4e.errors import E4EError
from e4e.nets.encoders import EncoderConfig, build_encoder
from e4e.nets.stylegan2 import Generator

ENCODER_KINDS = {"Encoder4Editing": "e4e", "GradualStyleEncoder": "psp"}


def is_official(ckpt) -> bool:
    return isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict) and any(
        k.startswith("encoder.") for k in ckpt["state_dict"])


def check_pair(ecfg: EncoderConfig, gcfg, encoder_name: str, generator_name: str) -> None:
    """An encoder only works with the generator it was trained for: same number of styles and style_dim."""
    if ecfg.n_styles != gcfg.n_latent:
        raise E4EError(f"{encoder_name} predicts {ecfg.n_styles} styles (a {ecfg.stylegan_size}px generator) but "
                       f"{generator_name} is {gcfg.size}px ({gcfg.n_latent} styles): pair the encoder with the "
                       "generator it was trained with")
    if ecfg.style_dim != gcfg.style_dim:
        raise E4EError(f"{encoder_name} predicts {ecfg.style_dim}-dim codes but {generator_name} has style_dim "
                       f"{gcfg.style_dim}: pair the encoder with the generator it was trained with")


def inverter_from_official(ckpt: dict, where: str = "checkpoint", log=print):
    from e4e.inverter import Inverter
    if not is_official(ckpt):
        raise E4EError(f"{where}: not an official e4e/pSp checkpoint (no state_dict with encoder.* keys)")
    state, opts = ckpt["state_dict"], dict(ckpt.get("opts") or {})
    other = sorted({k.split(".", 1)[0] for k in state} - {"encoder", "decoder"})
    if other:
        raise E4EError(f"{where}: unexpected key prefix(es) {', '.join(other)} (expected encoder. and decoder.)")
    encoder_type = opts.get("encoder_type", "Encoder4Editing")
    if encoder_type not in ENCODER_KINDS:
        raise E4EError(f"{where}: encoder_type {encoder_type!r} is not supported (supported: "
                       f"{', '.join(ENCODER_KINDS)})")
    enc_sd, dec_sd = strip_prefix(state, "encoder."), strip_prefix(state, "decoder.")
    ecfg = EncoderConfig.from_state_dict(enc_sd, kind=ENCODER_KINDS[encoder_type])
    encoder = build_encoder(ecfg)
    load_state_dict_checked(encoder, enc_sd, f"{where}: encoder")
    if not dec_sd:
        raise E4EError(f"{where}: has no decoder.* weights")
    gcfg = infer_generator_config(dec_sd, f"{where}: decoder")
    check_pair(ecfg, gcfg, f"{where}: the encoder", "its decoder (decoder.*)")
    decoder = Generator(gcfg)
    load_state_dict_checked(decoder, dec_sd, f"{where}: decoder")
    size = opts.get("stylegan_size")
    if size is not None and int(size) != decoder.size:
        raise E4EError(f"{where}: opts.stylegan_size={size} but the decoder weights are {decoder.size}px")
    latent_avg = None
    if opts.get("start_from_latent_avg", "latent_avg" in ckpt):
        latent_avg = ckpt.get("latent_avg")
        if latent_avg is None:
            log(f"{where}: start_from_latent_avg is set but the file has no latent_avg; computing it "
                "(mean of mapping(z) over 1e5 seeded z)")
            latent_avg = seeded_mean_latent(decoder)
    return Inverter(encoder, decoder, latent_avg).eval()


def latent_discriminator_from_official(ckpt: dict):
    """The W discriminator saved with save_training_data, or None."""
    from e4e.nets.discriminators import LatentCodesDiscriminator
    sd = ckpt.get("discriminator_state_dict") if isinstance(ckpt, dict) else None
    if not sd:
        return None
    d = LatentCodesDiscriminator(sd["mlp.0.weight"].shape[1], n_mlp=sum(k.endswith(".weight") for k in sd))
    load_state_dict_checked(d, sd, "discriminator_state_dict")
    return d


def load_official(path, log=print):
    return inverter_from_official(torch_load(path), Path(path).name, log=log)


def save_official(path, inverter, opts: dict | None = None, **extra) -> None:
    """Write the official layout, loadable by the official code's pSp.load_weights(strict=True)."""
    state = {f"encoder.{k}": v for k, v in inverter.encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in inverter.decoder.state_dict().items()})
    kind = inverter.encoder.cfg.kind
    o = {"encoder_type": {"e4e": "Encoder4Editing", "psp": "GradualStyleEncoder"}[kind],
         "stylegan_size": inverter.decoder.size, "start_from_latent_avg": inverter.latent_avg is not None}
    o.update(opts or {})
    ckpt = {"state_dict": state, "opts": o, **extra}
    if inverter.latent_avg is not None:
        ckpt["latent_avg"] = inverter.latent_avg.clone()
    atomic_torch_save(ckpt, path)



# -- the e4e trainer's checkpoint: the official coach's layout (state_dict, opts, latent_avg, global_step,
# optimizer, best_val_loss, discriminator_*) plus what a bit-exact resume needs (rng, w_pools)
E4E_STATE_KEYS = ("state_dict", "optimizer", "global_step", "rng")
E4E_DISC_KEYS = ("discriminator_state_dict", "discriminator_optimizer_state_dict", "w_pools")


def e4e_training_state(inverter, opts: dict, step: int, optimizer: dict, best_val, rng: dict,
                       disc: dict | None = None) -> dict:
    """The trainer's state as the official coach writes it; disc: {"model", "optimizer", "pools"} state
    dicts when the latent discriminator is on."""
    sd = {f"encoder.{k}": v for k, v in inverter.encoder.state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in inverter.decoder.state_dict().items()})
    st = {"state_dict": sd, "opts": opts, "global_step": step, "optimizer": optimizer, "best_val_loss": best_val,
          "rng": rng}
    if inverter.latent_avg is not None:
        st["latent_avg"] = inverter.latent_avg.detach().cpu()
    if disc is not None:
        st["discriminator_state_dict"] = disc["model"]
        st["discriminator_optimizer_state_dict"] = disc["optimizer"]
        st["w_pools"] = disc["pools"]
    return st


def save_e4e_state(path, state: dict) -> None:
    missing = [k for k in E4E_STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"e4e training state lacks {', '.join(missing)}")
    atomic_torch_save(state, path)


def load_e4e_state(path, with_discriminator: bool) -> dict:
    """A checkpoint of `e4e train` -> its dict, with a one-line error for anything that cannot resume."""
    st = torch_load(path)
    need = list(E4E_STATE_KEYS) + (list(E4E_DISC_KEYS) if with_discriminator else [])
    missing = [k for k in need if not isinstance(st, dict) or k not in st]
    if missing:
        what = "holds " + ", ".join(map(str, list(st)[:5])) if isinstance(st, dict) else f"is a {type(st).__name__}"
        raise E4EError(f"{path}: not a resumable checkpoint of this e4e run (no {', '.join(missing)}; it {what})"
                       + (" — was the latent discriminator on in that run?" if "w_pools" in missing else ""))
    return st


def load_inverter_state(inverter, state: dict, where) -> None:
    """The encoder.* / decoder.* weights of an official-layout state into an Inverter (strict)."""
    load_state_dict_checked(inverter.encoder, strip_prefix(state["state_dict"], "encoder."), f"{where}: encoder")
    load_state_dict_checked(inverter.decoder, strip_prefix(state["state_dict"], "decoder."), f"{where}: decoder")
