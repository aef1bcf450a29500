"""The latents file (`latents.npz`): image name -> W+ codes, plus what made them.

Plain numpy, readable with `np.load(path, allow_pickle=False)`:
    "<name>"    float32 (n_styles, style_dim), one entry per image, in inversion order
    "__meta__"  0-d unicode array holding JSON:
                {"format": "e4e.latents.v1",
                 "checkpoint": {"file": name, "sha256": hex of the WHOLE checkpoint file, "bytes": size},
                 "generator": {"size", "n_styles", "style_dim"}, ...}

Names are image paths without their extension, relative to the folder given (a file given by itself
is named by its stem), so they may hold "/". They become output paths (`e4e edit` writes
DIR/<edit>/<name>.png), so reading or building latents refuses names that would leave the output folder
(absolute, '..', '\\'). The checkpoint identity is the sha256 of the whole file: it costs a few seconds
on a 1 GB official checkpoint and is computed once per file per process.
Editing refuses latents whose generator shape differs from the checkpoint's, and (unless forced) latents
made with another checkpoint file, since codes of one generator mean nothing to another.
"""
import hashlib
import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from e4e.errors import E4EError
from e4e.outputs import atomic_write, check_name

FORMAT = "e4e.latents.v1"
META_KEY = "__meta__"

_sha_cache: dict[tuple, str] = {}


def checkpoint_sha256(path) -> str:
    """sha256 of the whole file, cached per (path, size, mtime) for this process."""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such checkpoint file")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


def checkpoint_identity(path) -> dict:
    path = Path(path)
    return {"file": path.name, "sha256": checkpoint_sha256(path), "bytes": path.stat().st_size}


def generator_shape(generator) -> dict:
    return {"size": int(generator.size), "n_styles": int(generator.n_latent), "style_dim": int(generator.style_dim)}


@dataclass
class Latents:
    """W+ codes of named images: codes[i] (n_styles, style_dim) belongs to names[i]."""
    names: list[str]
    codes: torch.Tensor  # (N, n_styles, style_dim) float32
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.names = [str(n) for n in self.names]
        self.codes = torch.as_tensor(self.codes).float()
        if self.codes.ndim != 3 or self.codes.shape[0] != len(self.names):
            raise E4EError(f"latents: {len(self.names)} names but codes of shape {tuple(self.codes.shape)} "
                           "(expected (N, n_styles, style_dim))")
        if len(set(self.names)) != len(self.names):
            raise E4EError("latents: image names must be unique")
        if META_KEY in self.names:
            raise E4EError(f"latents: {META_KEY!r} is reserved, not an image name")
        for n in self.names:  # names become output paths (e4e edit): a shared file must not write outside -o
            check_name(n, "latents: image name")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.codes[self.names.index(name)]
        except ValueError:
            raise KeyError(name) from None

    def select(self, names) -> "Latents":
        idx = [self.names.index(n) for n in names]
        return Latents([self.names[i] for i in idx], self.codes[idx], dict(self.meta))


def _write_array(z: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with z.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def save_latents(path, latents: Latents | dict, meta: dict | None = None) -> Path:
    """Write atomically (temp file + rename): an interrupted save never leaves a broken file.
    latents: a Latents, or a dict name -> (n_styles, style_dim) codes (then meta describes them)."""
    if isinstance(latents, dict):
        latents = Latents(list(latents), torch.stack([torch.as_tensor(v).float() for v in latents.values()])
                          if latents else torch.zeros(0, 0, 0), meta or {})
    meta = {**latents.meta, **(meta or {}), "format": FORMAT}

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for i, name in enumerate(latents.names):
                _write_array(z, name, latents.codes[i].detach().cpu().numpy().astype(np.float32))
            _write_array(z, META_KEY, np.array(json.dumps(meta)))
    return atomic_write(path, write)


def read_index(path) -> tuple[list[str], dict]:
    """(names, meta) of a latents file without reading its codes."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            names = [n for n in z.files if n != META_KEY]
            meta = json.loads(str(z[META_KEY])) if META_KEY in z.files else {}
    except Exception as e:
        raise E4EError(f"{path}: not a latents .npz file ({' '.join(str(e).split()) or type(e).__name__})") from None
    for n in names:
        check_name(n, f"{path}: image name")
    return names, meta


def merge_latents(path, sources, meta: dict) -> list[str]:
    """Concatenate latents files into `path` (atomically), streaming entry by entry so memory stays
    flat however many images there are. A name present in several sources keeps its first codes.
    `path` may itself be one of the sources. Returns the merged names in order."""
    names, seen = [], set()

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as out:
            for src in sources:
                try:
                    with zipfile.ZipFile(src) as z:
                        for info in z.infolist():
                            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                            if name == META_KEY or name in seen:
                                continue
                            check_name(name, f"{src}: entry")
                            seen.add(name)
                            names.append(name)
                            with z.open(info) as src_f, out.open(info.filename, "w", force_zip64=True) as dst_f:
                                shutil.copyfileobj(src_f, dst_f)
                except zipfile.BadZipFile:
                    raise E4EError(f"{src}: not a latents .npz file (bad zip)") from None
            _write_array(out, META_KEY, np.array(json.dumps({**meta, "format": FORMAT})))
    atomic_write(path, write)
    return names


def load_latents(path) -> Latents:
    """A latents .npz (ours, or any npz of per-name (n_styles, D) arrays, then with empty meta)."""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such latents file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # numpy raises ValueError, OSError, BadZipFile... on foreign bytes
        raise E4EError(f"{path}: not a latents .npz file ({' '.join(str(e).split()) or type(e).__name__})") from None
    odd = [k for k, a in arrays.items() if k != META_KEY and not (isinstance(a, np.ndarray) and a.dtype.kind in "fiu")]
    if odd:  # e.g. a torch .pt (also a zip): np.load hands its members back as bytes
        raise E4EError(f"{path}: not a latents .npz file ({odd[0]!r} is not a numeric .npy array)")
    meta = {}
    if META_KEY in arrays:
        try:
            meta = json.loads(str(arrays.pop(META_KEY)))
        except json.JSONDecodeError:
            raise E4EError(f"{path}: unreadable {META_KEY} entry") from None
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) > 1 or any(len(s) != 2 for s in shapes):
        raise E4EError(f"{path}: expected one (n_styles, style_dim) array per image, got shapes {sorted(shapes)[:4]}")
    names = list(arrays)
    codes = torch.from_numpy(np.stack([arrays[n] for n in names]).astype(np.float32)) if names \
        else torch.zeros(0, *(meta.get("generator", {}).get(k, 0) for k in ("n_styles", "style_dim")))
    return Latents(names, codes, meta)


def check_compatible(latents: Latents, generator, checkpoint=None, force: bool = False, where: str = "latents") -> None:
    """Refuse latents from another generator shape (always) or another checkpoint file (unless force)."""
    shape = generator_shape(generator)
    if len(latents) and tuple(latents.codes.shape[1:]) != (shape["n_styles"], shape["style_dim"]):
        raise E4EError(f"{where}: codes are {tuple(latents.codes.shape[1:])} (n_styles, style_dim) but the "
                       f"generator takes ({shape['n_styles']}, {shape['style_dim']}): they come from another model")
    recorded = latents.meta.get("generator")
    if recorded and any(recorded.get(k) != v for k, v in shape.items()):
        raise E4EError(f"{where}: made for a generator {recorded} but the checkpoint's is {shape}; "
                       "codes of one generator mean nothing to another (--force does not override this)")
    if checkpoint is None:
        return
    ident = latents.meta.get("checkpoint", {})
    want = ident.get("sha256")
    if want != checkpoint_sha256(checkpoint) and not force:
        made = f"{ident.get('file')} (sha256 {want[:12]}...)" if want else "an unrecorded checkpoint"
        raise E4EError(f"{where}: made with {made}, not {Path(checkpoint).name} (sha256 "
                       f"{checkpoint_sha256(checkpoint)[:12]}...): pass that checkpoint, or --force if the "
                       "generator is the same")
