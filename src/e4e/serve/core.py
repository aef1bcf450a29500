"""What `e4e serve` does, without a browser: invert one image, move it along directions, refine, export.

In: an Inverter (`e4e.load()`), the directions found for it (`discover_directions`), a work folder the
app owns, and per request an image file (an upload or a shipped sample) plus slider values.
Out: PIL images (input, inversion, edit), the distortion of the inversion, and files written only under
the work folder (latents .npz, edited .png) for the browser to download.

Directions are discovered, never hard-coded, so a new embedded model brings its own:
- label-fitted / InterFaceGAN directions stored in a native checkpoint as tensors named
  `directions.<name>`, small `.pt` / `.npy` direction files beside the checkpoint, and a fitted
  directions file (e4e.benchmark's format) named `directions.safetensors` beside it: the embedded avatar
  model's folder holds one (smile, glasses, facial hair, hat, one slider per hair colour; skipped when
  its recorded model hash says it was fitted to another model);
- direction files or folders the user adds (`e4e serve --directions`; a fitted directions file too);
- the top SeFa directions and GANSpace components of the model's generator.
A slider value v moves the codes by v * unit along the direction (GANSpace: unit = the component's std,
and fitted directions are one W standard deviation long, so those sliders read in standard deviations of W).

Every request is independent: the state of one browser tab is an `Inversion` (codes, target, and the
tuned generator after PTI), so requests from several tabs never share anything mutable.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from e4e.errors import E4EError

MAX_PIXELS = 16 * 1024 * 1024  # uploads larger than this are refused (the CLI's limit is 64 Mpx)
MAX_DIRECTION_BYTES = 4 << 20  # a per-style 18 x 512 float32 direction is 37 KB; bigger files are not directions
FACE_HINTS = ("ffhq", "face", "celeb")
REFINE_METHODS = ("optimize", "pti")


@dataclass
class Direction:
    """One slider: codes + value * unit * vector (only to `styles` when given)."""
    name: str
    kind: str  # "checkpoint", "file", "fitted", "sefa" or "ganspace"
    vector: torch.Tensor  # (1, D) or (1, n_styles, D)
    styles: list[int] | None = None
    unit: float = 1.0
    limit: float = 5.0  # the slider runs from -limit to +limit

    @property
    def label(self) -> str:
        return f"{self.name} ({self.kind})"


@dataclass
class Inversion:
    """One inverted image: what a browser tab holds between requests."""
    name: str
    image: Image.Image  # the input as the encoder saw it (cropped / aligned), at the generator's size
    target: torch.Tensor  # (1, 3, S, S) in [-1, 1], the distortion reference
    codes: torch.Tensor  # (1, n_styles, D) W+ codes
    distortion: float  # MSE of the reconstruction against target, in [-1, 1] units
    generator: torch.nn.Module | None = None  # the PTI-tuned copy; None = the model's generator
    refined: str | None = None
    notes: list[str] = field(default_factory=list)


def one_line(err: Exception, path=None) -> str:
    """An error as one line, with the temporary upload path shortened to the file's name."""
    text = " ".join(str(err).split())
    if path is not None:
        text = text.replace(str(path), Path(path).name)
    return text


def label_of(text: str) -> str:
    """A short [A-Za-z0-9_.+=-] label for an upload (session keys, download names): unlike
    e4e.outputs.safe_name, which keeps a walked relative path, nothing of the client's text but these."""
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text).strip("_.")[:80] or "image"


# -- directions ---------------------------------------------------------------------------------------
def _fits(direction: torch.Tensor, generator) -> bool:
    if direction.shape[-1] != generator.style_dim:
        return False
    return direction.ndim == 2 or direction.shape[1] == generator.n_latent


def checkpoint_directions(path) -> dict[str, torch.Tensor]:
    """Tensors named `directions.<name>` inside a native (.safetensors) checkpoint; {} for other formats."""
    from e4e.checkpoints.io import sniff_format
    if path is None or sniff_format(path) != "safetensors":
        return {}
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        return {k.split(".", 1)[1]: f.get_tensor(k) for k in f.keys() if k.startswith("directions.")}


def direction_files(paths, skip=()) -> list[Path]:
    """.pt / .npy files under the given files and folders (folders: not recursive, sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix in (".pt", ".npy") and f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise E4EError(f"{p}: no such direction file or folder (--directions)")
    skip = {Path(s).resolve() for s in skip if s is not None}
    return [f for f in out if f.resolve() not in skip]


FITTED_FILE = "directions.safetensors"


def fitted_directions(path, checkpoint=None) -> list[Direction]:
    """The sliders of a fitted directions file (e4e.benchmark.save_directions; scripts/make_demo_assets.py
    writes the embedded model's): its own kind only, a binary attribute once (toward 1: a negative value
    removes it), hair colour once per colour; each slider reaches past the calibrated strength. With
    `checkpoint`, a file recording another model's sha256 -> E4EError (its directions mean nothing here)."""
    import math

    from e4e.benchmark import BINARY, directions_info, load_directions
    info = directions_info(path)
    if checkpoint is not None and info.get("model_sha256"):
        from e4e.latents import checkpoint_sha256
        if info["model_sha256"] != checkpoint_sha256(checkpoint):
            raise E4EError(f"{Path(path).name} was fitted to another model ({info.get('model')})")
    dirs, _ = load_directions(path)
    labelled = [d for d in dirs if d.kind != "sefa"]
    kind = info.get("kind") or (labelled[0].kind if labelled else None)
    out = []
    for d in labelled:
        if d.kind != kind or (d.attribute in BINARY and d.target != "1"):
            continue
        name = d.attribute.replace("_", " ") + ("" if d.attribute in BINARY else f" {d.target}")
        limit = max(5, math.ceil(1.5 * (d.info.get("strength", d.s90) or 3.0)))
        vec = d.vector.float()  # W (D,) -> (1, D); a codes_wplus direction (n, D) -> (1, n, D), one per style
        out.append(Direction(name, "fitted", vec.reshape(1, *vec.shape), limit=float(limit)))
    return out


def discover_directions(inverter, extra=(), n_sefa: int = 3, n_ganspace: int = 3, ganspace_samples: int = 20_000,
                        log=print) -> list[Direction]:
    """Every direction the sliders offer, in the order above. Files beside the checkpoint that are not
    directions for this generator are skipped (and logged); files the user names must fit."""
    from e4e import editing
    g = inverter.decoder
    ckpt = getattr(inverter, "checkpoint_path", None)
    found: list[Direction] = []
    for name, t in checkpoint_directions(ckpt).items():
        d = editing.interfacegan.as_direction(t, f"{ckpt}: directions.{name}")
        editing.check_direction(d, g.n_latent, g.style_dim, f"{Path(ckpt).name}: directions.{name}")
        found.append(Direction(name, "checkpoint", d))
    fitted = Path(ckpt).parent / FITTED_FILE if ckpt is not None else None
    if fitted is not None and fitted.is_file() and fitted.resolve() != Path(ckpt).resolve():
        try:
            found += _fitting(fitted_directions(fitted, ckpt), g, fitted)
        except E4EError as e:
            log(f"e4e serve: {fitted.name} beside the checkpoint skipped: {one_line(e)}")
    beside = direction_files([Path(ckpt).parent], skip=[ckpt]) if ckpt is not None else []
    for f in beside:
        if f.stat().st_size > MAX_DIRECTION_BYTES:
            continue
        try:
            d = editing.load_direction(f)
        except E4EError as e:
            log(f"e4e serve: {f.name} beside the checkpoint skipped: {one_line(e)}")
            continue
        if not _fits(d, g):
            log(f"e4e serve: {f.name} beside the checkpoint skipped: shape {tuple(d.shape)} does not fit this generator")
            continue
        found.append(Direction(f.stem, "file", d))
    for f in direction_files(extra):
        if f.suffix == ".safetensors":
            found += _fitting(fitted_directions(f), g, f)
            continue
        d = editing.load_direction(f)
        editing.check_direction(d, g.n_latent, g.style_dim, str(f))
        found.append(Direction(f.stem, "file", d))
    if n_sefa > 0:
        sefa = editing.sefa_directions(g, n_directions=n_sefa)
        found += [Direction(f"SeFa {k}", "sefa", sefa.directions[k:k + 1], styles=sefa.styles)
                  for k in range(sefa.directions.shape[0])]
    if n_ganspace > 0:
        pca = editing.ganspace_pca(g, n_components=min(n_ganspace, g.style_dim), n_samples=ganspace_samples, seed=0)
        found += [Direction(f"GANSpace {k}", "ganspace", pca["comp"][k], unit=float(pca["std"][k]), limit=3.0)
                  for k in range(pca["comp"].shape[0])]
    names = [d.label for d in found]
    for i, d in enumerate(found):  # two files with one stem: keep both sliders apart
        if names.count(d.label) > 1:
            d.name = f"{d.name} #{names[:i + 1].count(d.label)}"
    return found


def _fitting(dirs: list[Direction], generator, path) -> list[Direction]:
    from e4e import editing
    for d in dirs:
        editing.check_direction(d.vector, generator.n_latent, generator.style_dim, f"{Path(path).name}: {d.name}")
    return dirs


def apply_values(codes: torch.Tensor, directions: list[Direction], values) -> torch.Tensor:
    """codes moved along every direction by its slider value (zeros leave the codes untouched)."""
    from e4e.editing import apply_direction
    values = list(values)
    if len(values) != len(directions):
        raise E4EError(f"{len(values)} slider values for {len(directions)} directions")
    out = codes
    for d, v in zip(directions, values):
        if v:
            out = apply_direction(out, d.vector, float(v) * d.unit, d.styles)
    return out


def distortion(images: torch.Tensor, target: torch.Tensor) -> float:
    """MSE (e4e.metrics.mse) of the images as shown, clamped to [-1, 1], against the target."""
    from e4e.metrics import mse
    return float(mse(images.clamp(-1, 1), target).mean())


# -- the app's model ----------------------------------------------------------------------------------
def looks_like_faces(inverter) -> bool:
    """Whether inputs should be FFHQ-aligned by default: the checkpoint's recorded dataset or its file
    name mentions faces (official `e4e_ffhq_encode.pt`; the embedded avatar model does not)."""
    path = getattr(inverter, "checkpoint_path", None)
    if path is None:
        return False
    text = Path(path).name.lower()
    from e4e.checkpoints.io import sniff_format
    if sniff_format(path) == "safetensors":
        import json

        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            text += json.dumps((f.metadata() or {}).get("info", "")).lower()
    return any(h in text for h in FACE_HINTS)


class Editor:
    """The loaded model, its directions and the work folder; methods are the app's requests."""

    def __init__(self, inverter, directions: list[Direction], workdir, detector=None, max_pixels: int = MAX_PIXELS,
                 align_default: bool = False):
        self.inverter = inverter.eval()
        self.align_default = align_default
        self.directions = directions
        self.workdir = Path(workdir)
        self.detector = detector
        self.max_pixels = max_pixels
        g = inverter.decoder
        self.size = int(inverter.output_size or g.size)

    # inputs
    def load_input(self, path, align: bool = False) -> Image.Image:
        """An image file -> RGB, FFHQ-aligned when asked, cropped to the model's square. E4EError (one
        line naming only the file) for anything that is not a usable image, or when no face is found."""
        from e4e.imageio import fit_square, load_image
        if path is None:
            raise E4EError("no image: upload one or pick a sample")
        path = Path(path)
        try:
            im = load_image(path, None if align else max(self.size, self.inverter.input_size), max_pixels=self.max_pixels)
        except E4EError as e:
            raise E4EError(one_line(e, path)) from None
        if align:
            if self.detector is None:
                raise E4EError("face alignment is not available here (facenet-pytorch's MTCNN weights not found)")
            from e4e.align import align_image
            faces = align_image(im, self.detector, output_size=max(self.size, self.inverter.input_size))
            if not faces:
                raise E4EError(f"{path.name}: no face found (untick 'align face' to use the image as it is)")
            im = faces[0]
        return fit_square(im, self.size)

    @torch.no_grad()
    def invert(self, path, align: bool = False, name: str | None = None) -> Inversion:
        from e4e.imageio import fit_square, to_tensor
        image = self.load_input(path, align)
        dev = next(self.inverter.parameters()).device
        x = to_tensor(fit_square(image, self.inverter.input_size)).to(dev)
        codes = self.inverter.encode(x).float()
        target = to_tensor(image).to(dev)
        mse = distortion(self.render(codes), target.cpu())
        return Inversion(label_of(name or Path(path).stem), image, target.cpu(), codes.cpu(), mse)

    # outputs
    @torch.no_grad()
    def render(self, codes: torch.Tensor, generator=None) -> torch.Tensor:
        """W+ codes -> (B, 3, size, size) in [-1, 1], with the model's or a tuned generator."""
        from e4e.refine import render
        g = generator if generator is not None else self.inverter.decoder
        dev = next(g.parameters()).device
        return render(g, codes.to(dev), (self.size, self.size)).float().cpu()

    def reconstruction(self, inv: Inversion) -> Image.Image:
        from e4e.imageio import to_pil
        return to_pil(self.render(inv.codes, inv.generator)[0])

    def edit(self, inv: Inversion, values) -> Image.Image:
        from e4e.imageio import to_pil
        codes = apply_values(inv.codes, self.directions, values)
        return to_pil(self.render(codes, inv.generator)[0])

    def refine(self, inv: Inversion, method: str = "optimize", steps: int = 100, progress: bool = True) -> Inversion:
        """Lower the distortion: Adam on the codes ('optimize') or pivotal tuning of a generator copy
        ('pti'), both on L2 (no perceptual network is shipped). Progress goes through tqdm."""
        from e4e import refine
        if method not in REFINE_METHODS:
            raise E4EError(f"refine method must be one of {', '.join(REFINE_METHODS)}, got {method!r}")
        steps = int(steps)
        if not 1 <= steps <= 2000:
            raise E4EError(f"refine steps must be in 1..2000, got {steps}")
        dev = next(self.inverter.parameters()).device
        with torch.enable_grad():
            if method == "optimize":
                res = refine.optimize(self.inverter, inv.target.to(dev), inv.codes.to(dev), steps=steps,
                                      progress=progress)
                codes, generator = res.codes.cpu(), inv.generator
            else:
                start = inv.generator if inv.generator is not None else self.inverter
                res = refine.pti(start, inv.target.to(dev), inv.codes.to(dev), steps=steps, progress=progress)
                codes, generator = inv.codes, res.generator
        mse = distortion(self.render(codes, generator), inv.target)
        return Inversion(inv.name, inv.image, inv.target, codes, mse, generator, method, list(inv.notes))

    def export(self, inv: Inversion, values) -> tuple[Path, Path]:
        """Write the edited codes (.npz, with the edit recorded in its meta) and the edited image (.png)
        into a fresh folder under the work folder; -> (latents path, image path)."""
        from e4e.api import inversion_meta
        from e4e.latents import Latents, save_latents
        values = [float(v) for v in values]
        codes = apply_values(inv.codes, self.directions, values)
        out = self.workdir / "exports" / uuid.uuid4().hex[:12]
        out.mkdir(parents=True)
        meta = inversion_meta(self.inverter)
        meta["edit"] = {d.label: v for d, v in zip(self.directions, values) if v}
        if inv.refined:
            meta["refined"] = inv.refined
            if inv.generator is not None:
                meta["note"] = "codes for a PTI-tuned generator that is not saved: they decode as shown only there"
        lat_path = save_latents(out / f"{inv.name}.npz", Latents([inv.name], codes, meta))
        img_path = out / f"{inv.name}_edited.png"
        self.edit(inv, values).save(img_path)
        return lat_path, img_path


def load_editor(workdir, checkpoint=None, directions=(), n_sefa: int = 3, n_ganspace: int = 3,
                ganspace_samples: int = 20_000, device: str = "cpu", max_pixels: int = MAX_PIXELS,
                log=print) -> Editor:
    """Editor for a checkpoint (None = the embedded model), with alignment when MTCNN weights exist."""
    from e4e.api import load
    inv = load(checkpoint, device=device)
    dirs = discover_directions(inv, directions, n_sefa, n_ganspace, ganspace_samples, log=log)
    try:
        from e4e.align import load_detector
        detector = load_detector()
    except E4EError as e:
        log(f"e4e serve: face alignment off: {one_line(e)}")
        detector = None
    return Editor(inv, dirs, workdir, detector, max_pixels, align_default=looks_like_faces(inv))


def sample_images() -> list[Path]:
    """The held-out samples shipped with the package."""
    folder = Path(__file__).resolve().parents[1] / "assets" / "samples"
    return sorted(folder.glob("*.png")) if folder.is_dir() else []
