"""Any supported checkpoint -> our modules (`read_checkpoint`), a summary of it (`describe`), and the
conversions between formats (`convert`). Files are recognised by their bytes, not their names.

Readable: NVIDIA stylegan2-ada-pytorch .pkl (generator), rosinality .pt (generator), official e4e/pSp .pt
(inverter), e4e .safetensors (generator or inverter). Writable: all but NVIDIA's. Weights pass through
load_state_dict / state_dict unchanged, so a round trip between writable formats is bit-exact; what
our modules do not hold (optimizer and discriminator state, NVIDIA's G/D) is listed as not converted.
"""
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from e4e.checkpoints.io import load_state_dict_checked, sniff_format, stderr_log, torch_load
from e4e.checkpoints.native import load_native, save_native
from e4e.checkpoints.official import check_pair, inverter_from_official, is_official, save_official
from e4e.checkpoints.rosinality import from_rosinality_dict, generator_from_state, save_rosinality
from e4e.errors import E4EError
from e4e.outputs import writable_file
from e4e.nets.stylegan2 import Generator, GeneratorConfig

from e4e.checkpoints.io import MEAN_LATENT_N, MEAN_LATENT_SEED, seeded_mean_latent  # noqa: F401 (re-exported)
FORMATS = {"nvidia": "NVIDIA stylegan2-ada-pytorch .pkl", "rosinality": "rosinality StyleGAN2 .pt",
           "official": "official e4e/pSp .pt", "safetensors": "e4e .safetensors"}
WRITABLE = ("rosinality", "official", "safetensors")
SUFFIXES = {".safetensors": "safetensors", ".pt": None, ".pth": None, ".ckpt": None}  # None: rosinality or official


@dataclass
class Checkpoint:
    """A checkpoint read into our modules. latent_avg is (1, D) for a generator, and for an inverter
    what it adds to the encoder's codes, (n_styles, D)."""
    path: Path
    format: str
    generator: Generator
    inverter: object | None = None  # e4e.inverter.Inverter
    latent_avg: torch.Tensor | None = None
    latent_avg_source: str = "none"  # "file" | "computed" | "none"
    opts: dict | None = None  # official training options, kept for the way back
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "generator" if self.inverter is None else "inverter"

    @property
    def generator_latent_avg(self) -> torch.Tensor | None:
        """(1, D): the generator's mean W. An inverter's rows are that mean repeated when it is one."""
        avg = self.latent_avg
        if avg is None or self.inverter is None:
            return avg
        return avg[:1].clone() if torch.equal(avg, avg[:1].expand_as(avg)) else None


HOW_COMPUTED = f"the mean of mapping(z) over {MEAN_LATENT_N} seeded z (seed {MEAN_LATENT_SEED})"


# -- reading ----------------------------------------------------------------------------------------------

def read_checkpoint(path, compute_latent_avg: bool = True, log=stderr_log) -> Checkpoint:
    """Any supported file -> Checkpoint. A generator without latent_avg gets the seeded mean of mapping(z)
    when compute_latent_avg is set, and `log` is told once."""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such file")
    found = sniff_format(path)
    if found == "safetensors":
        ck = _read_native(path)
    elif found == "pickle" or (found == "unknown" and path.suffix == ".pkl"):
        ck = _read_nvidia(path)
    else:
        ck = _read_torch(path, log)
    if ck.kind == "generator" and ck.latent_avg is None and compute_latent_avg:
        ck.latent_avg, ck.latent_avg_source = seeded_mean_latent(ck.generator), "computed"
        if log:
            log(f"{path.name}: no latent_avg in the file; computed it as {HOW_COMPUTED}")
    return ck


def _read_nvidia(path: Path) -> Checkpoint:
    from e4e.checkpoints.nvidia import convert_generator, load_nvidia_pkl
    pkl = load_nvidia_pkl(path)
    state, avg, notes = convert_generator(pkl["G_ema"], pkl["init_kwargs"], pkl["class_names"], f"{path.name}:G_ema")
    g = generator_from_state(state, f"{path.name}:G_ema (converted)")
    return Checkpoint(path, "nvidia", g, latent_avg=avg, latent_avg_source="file" if avg is not None else "none",
                      dropped=["everything but G_ema (G, D, augment_pipe: training state)"], notes=notes)


def _read_torch(path: Path, log) -> Checkpoint:
    ckpt = torch_load(path)
    if is_official(ckpt):
        inv = inverter_from_official(ckpt, path.name, log=log)
        source = "file" if ckpt.get("latent_avg") is not None and inv.latent_avg is not None else \
            "computed" if inv.latent_avg is not None else "none"
        rest = [k for k in ckpt if k not in ("state_dict", "opts", "latent_avg")]
        return Checkpoint(path, "official", inv.decoder, inverter=inv, latent_avg=inv.latent_avg,
                          latent_avg_source=source, opts=dict(ckpt.get("opts") or {}), dropped=rest)
    g, avg = from_rosinality_dict(ckpt, path)
    used = "g_ema" if "g_ema" in ckpt else "g" if "g" in ckpt else None
    rest = [k for k in ckpt if k not in (used, "latent_avg")] if used else []
    return Checkpoint(path, "rosinality", g, latent_avg=avg, latent_avg_source="file" if avg is not None else "none",
                      dropped=rest)


def inverter_from_native(parts: dict, configs: dict, extra: dict, where: str):
    from e4e.inverter import Inverter
    from e4e.nets.encoders import EncoderConfig, build_encoder
    ecfg, gcfg = native_config(EncoderConfig, configs, "encoder", where), native_config(GeneratorConfig, configs,
                                                                                          "generator", where)
    output_size = configs.get("output_size", 256)
    if output_size is not None and (not isinstance(output_size, int) or output_size < 1):
        raise E4EError(f"{where}: corrupt e4e metadata: output_size {output_size!r}")
    check_pair(ecfg, gcfg, f"{where}: the encoder", "its generator")
    encoder = build_encoder(ecfg)
    load_state_dict_checked(encoder, parts["encoder"], f"{where}: encoder")
    decoder = Generator(gcfg)
    load_state_dict_checked(decoder, parts["generator"], f"{where}: generator")
    return Inverter(encoder, decoder, extra.get("latent_avg"), output_size).eval()


def native_config(cls, configs: dict, name: str, where: str):
    """cls(**configs[name]) from e4e metadata, with a one-line error when it is missing or malformed."""
    if not isinstance(configs.get(name), dict):
        raise E4EError(f"{where}: corrupt e4e metadata: no {name} config")
    try:
        return cls(**configs[name])
    except (TypeError, ValueError, KeyError) as e:
        raise E4EError(f"{where}: corrupt e4e metadata: bad {name} config ({' '.join(str(e).split())})") from None


def _stored_source(info: dict) -> str:
    """How a stored latent_avg came about, as the writer recorded it ('file' when it did not say)."""
    source = info.get("latent_avg")
    return source if isinstance(source, str) and source not in ("computed", "none") else "file"


def _read_native(path: Path) -> Checkpoint:
    parts, configs, extra, info = load_native(path)
    if "generator" not in parts:
        raise E4EError(f"{path}: e4e checkpoint without a generator (holds {', '.join(parts) or 'nothing'})")
    opts = info.get("opts")
    if "encoder" in parts:
        inv = inverter_from_native(parts, configs, extra, path.name)
        source = _stored_source(info) if inv.latent_avg is not None else "none"
        return Checkpoint(path, "safetensors", inv.decoder, inverter=inv, latent_avg=inv.latent_avg,
                          latent_avg_source=source, opts=opts)
    g = Generator(native_config(GeneratorConfig, configs, "generator", path.name))
    load_state_dict_checked(g, parts["generator"], f"{path.name}: generator")
    avg = extra.get("latent_avg")
    if avg is not None:
        avg = avg.float().reshape(-1, g.style_dim)[:1]
    source = _stored_source(info) if avg is not None else "none"
    return Checkpoint(path, "safetensors", g.eval(), latent_avg=avg, latent_avg_source=source, opts=opts)


# -- describing -------------------------------------------------------------------------------------------

def describe_generator(g: Generator) -> str:
    c = g.cfg
    widths = " ".join(f"{r}:{c.channels(r)}" for r in (2 ** i for i in range(2, c.log_size + 1)))
    return (f"{c.size}px, n_styles {c.n_latent}, {c.n_mlp} mapping layers, style_dim {c.style_dim}, "
            f"channel_multiplier {c.channel_multiplier}, channel_max {c.channel_max} (widths {widths})")


def describe_encoder(encoder) -> str:
    e = encoder.cfg
    name = {"e4e": "Encoder4Editing (e4e)", "psp": "GradualStyleEncoder (pSp)"}[e.kind]
    return (f"{name}, {e.mode} {e.num_layers}-layer body, stage widths {'/'.join(map(str, e.widths))}, "
            f"units {'/'.join(map(str, e.units))}, input {e.input_size}px, {e.n_styles} styles of {e.style_dim}")


def describe(ck: Checkpoint) -> list[str]:
    """What a checkpoint holds, one fact a line."""
    lines = [f"format: {FORMATS[ck.format]}", f"kind: {ck.kind}"]
    if ck.inverter is not None:
        lines.append(f"encoder: {describe_encoder(ck.inverter.encoder)}")
    lines.append(f"generator: {describe_generator(ck.generator)}")
    avg = ck.latent_avg
    if ck.latent_avg_source == "computed":
        lines.append(f"latent_avg: none in the file; computed as {HOW_COMPUTED}")
    elif avg is not None:
        lines.append(f"latent_avg: present, {tuple(avg.shape)}"
                     + (f", {ck.latent_avg_source}" if ck.latent_avg_source not in ("file", "none") else ""))
    elif ck.kind == "inverter":
        lines.append("latent_avg: none (start_from_latent_avg is off: codes are used as predicted)")
    else:
        lines.append(f"latent_avg: none in the file (computed when converting or loading: {HOW_COMPUTED})")
    if ck.opts:
        lines.append(f"opts: {len(ck.opts)} training options (kept in e4e .safetensors and official .pt)")
    if ck.dropped:
        lines.append(f"not converted: {', '.join(map(str, ck.dropped))}")
    lines += [f"note: {n}" for n in ck.notes]
    return lines


# -- writing ----------------------------------------------------------------------------------------------

def output_format(out, to: str | None = None) -> str | None:
    """The format asked for by --to and OUT's suffix; None when the suffix leaves rosinality vs official
    open (decided by what is converted). Refuses NVIDIA pickles and contradictions."""
    out = Path(out)
    suffix = out.suffix.lower()
    if to is not None and to not in WRITABLE:
        raise E4EError(f"--to {to}: unknown format (choose from {', '.join(WRITABLE)})")
    if suffix == ".pkl":
        raise E4EError(f"{out}: writing NVIDIA .pkl files is not supported; write a rosinality .pt or an e4e "
                       ".safetensors file instead")
    by_name = SUFFIXES.get(suffix, "unknown")
    if to is None:
        if by_name == "unknown":
            raise E4EError(f"{out}: cannot tell the output format from the name; use a .safetensors or .pt name, "
                           f"or --to {{{','.join(WRITABLE)}}}")
        return by_name
    if (to == "safetensors") != (by_name == "safetensors") and by_name != "unknown":
        want = ".safetensors" if to == "safetensors" else ".pt"
        raise E4EError(f"{out}: the name does not match --to {to}; name it {out.with_suffix(want).name}")
    return to


def _generator_to_official(path) -> E4EError:
    return E4EError(f"{path}: a generator only (no encoder); the official e4e/pSp format holds an encoder and its "
                    "decoder: write an e4e .safetensors or a rosinality .pt file instead")


def write_checkpoint(ck: Checkpoint, out, fmt: str) -> None:
    """Write `ck` as `fmt` (one of WRITABLE)."""
    out = Path(out)
    avg_source = f"computed at conversion from {ck.path.name}: {HOW_COMPUTED}" if ck.latent_avg_source == "computed" \
        else ck.latent_avg_source
    info = {"source_format": ck.format, "source_file": ck.path.name, "latent_avg": avg_source}
    if ck.opts is not None:
        info["opts"] = ck.opts
    if fmt == "official":
        if ck.inverter is None:
            raise _generator_to_official(ck.path)
        save_official(out, ck.inverter, opts=ck.opts)
    elif fmt == "safetensors":
        if ck.inverter is not None:
            ck.inverter.save(out, info=info)
        else:
            tensors = {"latent_avg": ck.latent_avg} if ck.latent_avg is not None else {}
            save_native(out, {"generator": ck.generator.state_dict()}, {"generator": asdict(ck.generator.cfg)},
                        tensors=tensors, info=info)
    elif fmt == "rosinality":
        if ck.inverter is not None:
            raise E4EError(f"{ck.path}: an inverter; take its generator first (as_generator) to write a rosinality file")
        save_rosinality(out, ck.generator, latent_avg=ck.latent_avg)
    else:
        raise E4EError(f"cannot write format {fmt!r} (choose from {', '.join(WRITABLE)})")


def replace_generator(ck: Checkpoint, generator_path) -> Checkpoint:
    """Pair the encoder of an inverter checkpoint with another generator; latent_avg stays the inverter's
    (the encoder was trained to predict offsets from it)."""
    from e4e.inverter import Inverter
    if ck.inverter is None:
        raise E4EError(f"{ck.path.name}: a generator, not an inverter: --generator replaces the decoder of an "
                       "inverter checkpoint")
    gen = read_checkpoint(generator_path, compute_latent_avg=False, log=None)
    if gen.kind != "generator":
        raise E4EError(f"--generator {gen.path.name}: an inverter checkpoint; give a generator file")
    check_pair(ck.inverter.encoder.cfg, gen.generator.cfg, f"{ck.path.name}: the encoder",
               f"--generator {gen.path.name}")
    inv = Inverter(ck.inverter.encoder, gen.generator, ck.inverter.latent_avg, ck.inverter.output_size).eval()
    opts = dict(ck.opts) if ck.opts is not None else None
    return Checkpoint(ck.path, ck.format, gen.generator, inverter=inv, latent_avg=inv.latent_avg,
                      latent_avg_source=ck.latent_avg_source, opts=opts, dropped=ck.dropped,
                      notes=ck.notes + [f"decoder replaced by {gen.path.name} ({FORMATS[gen.format]}); latent_avg "
                                        f"kept from {ck.path.name}"])


def as_generator(ck: Checkpoint) -> tuple[Checkpoint, list[str]]:
    """An inverter's decoder as a generator checkpoint (latent_avg: its mean W, computed if the inverter's
    is none or not one mean repeated), with notes on what that changed."""
    if ck.inverter is None:
        return ck, []
    notes = ["wrote the generator only (a rosinality file holds no encoder)"]
    avg, source = ck.generator_latent_avg, ck.latent_avg_source
    if avg is None:
        avg, source = seeded_mean_latent(ck.generator), "computed"
        why = "differs per style" if ck.latent_avg is not None else "is none"
        notes.append(f"the inverter's latent_avg {why}; the generator's latent_avg is {HOW_COMPUTED}")
    return Checkpoint(ck.path, ck.format, ck.generator, latent_avg=avg, latent_avg_source=source,
                      dropped=ck.dropped + ["encoder"], notes=ck.notes), notes


def convert(src, dst=None, to: str | None = None, generator=None, overwrite: bool = False) -> list[str]:
    """Read `src`, describe it, and write it to `dst` (if given) in the format `to` or dst's suffix names.
    Returns the lines to show. A generator without latent_avg gets one computed, stored and reported."""
    src = Path(src)
    fmt = None
    if dst is not None:
        dst = Path(dst)
        fmt = output_format(dst, to)
        if dst.exists() and dst.resolve() == src.resolve():
            raise E4EError(f"{dst}: is the input file; write to another path")
        if dst.exists() and not overwrite:
            raise E4EError(f"{dst}: exists; pass --overwrite to replace it")
        writable_file(dst)  # before the (possibly long) read: a bad OUT costs one line
    elif to is not None or generator is not None:
        raise E4EError("--to and --generator need an output path: e4e convert IN OUT")
    ck = read_checkpoint(src, compute_latent_avg=False, log=None)
    if generator is not None:
        ck = replace_generator(ck, generator)
    if dst is not None:
        fmt = fmt or ("official" if ck.kind == "inverter" else "rosinality")
        if fmt == "official" and ck.kind == "generator":
            raise _generator_to_official(src)
        if ck.kind == "generator" and ck.latent_avg is None:
            ck.latent_avg, ck.latent_avg_source = seeded_mean_latent(ck.generator), "computed"
    lines = [f"{src}:"] + [f"  {line}" for line in describe(ck)]
    if dst is None:
        return lines
    if fmt == "rosinality":
        ck, notes = as_generator(ck)
        lines += [f"  note: {n}" for n in notes]
    write_checkpoint(ck, dst, fmt)
    lines.append(f"wrote {dst} ({FORMATS[fmt]}, {ck.kind})")
    return lines
