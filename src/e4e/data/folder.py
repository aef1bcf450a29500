"""A small, deterministic image-folder dataset: tensors (3, H, W) in [-1, 1].

Which files: `files` if given (paths relative to `root`); else, when `root` holds a labels.csv (as
`e4e data emoji` writes), the rows of `split` (default "train", so the held-out test images never reach
a trainer by accident); else `root/split` when that folder exists; else every image under `root`
(recursive, sorted). Unreadable files never stop training: files that are not images at all are dropped
when the dataset is built, files that fail to decode later are skipped (the next readable image is
returned instead); both are counted in `skipped`.
"""
import csv
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from e4e.errors import E4EError
from e4e.imageio import iter_image_paths, load_image


def read_split(labels_csv: str | Path, split: str) -> list[str]:
    """The `file` column of the rows whose `split` column equals `split`."""
    with open(labels_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"file", "split"} <= set(reader.fieldnames or ()):
            raise E4EError(f"{labels_csv}: needs 'file' and 'split' columns")
        return [row["file"] for row in reader if row["split"] == split]


def _readable_header(path: Path) -> bool:
    try:
        with Image.open(path):
            return True
    except Exception:  # any reason at all: the file is counted as skipped
        return False


class ImageFolderDataset(torch.utils.data.Dataset):
    def __init__(self, root: str | Path, size: int | None = None, split: str | None = None,
                 files: Sequence[str | Path] | None = None, hflip: bool = False, fit: str = "crop",
                 background="white", cache: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise E4EError(f"{self.root}: no such folder")
        self.size, self.hflip, self.fit, self.background, self.cache = size, hflip, fit, background, cache
        self.split = split
        if files is not None:
            paths = [self.root / f for f in files]
        elif (self.root / "labels.csv").is_file():
            self.split = split or "train"
            paths = [self.root / f for f in read_split(self.root / "labels.csv", self.split)]
        elif split is not None and (self.root / split).is_dir():
            paths = list(iter_image_paths(self.root / split))
        else:
            paths = list(iter_image_paths(self.root))
        ok = [_readable_header(p) for p in tqdm(paths, desc="scan images", unit="img", leave=False,
                                                 disable=len(paths) < 5000)]
        self.paths = [p for p, good in zip(paths, ok) if good]
        self.skipped = [p for p, good in zip(paths, ok) if not good]
        self._bad: set[int] = set()
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def _load(self, i: int) -> np.ndarray:
        if i in self._cache:
            return self._cache[i]
        a = np.asarray(load_image(self.paths[i], self.size, fit=self.fit, background=self.background))
        if self.cache:
            self._cache[i] = a
        return a

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self.paths)
        if n == 0:
            raise IndexError("empty dataset")
        for k in range(n):
            i = (index + k) % n
            if i in self._bad:
                continue
            try:
                a = self._load(i)
            except E4EError as e:
                self._bad.add(i)
                self.skipped.append(self.paths[i])
                warnings.warn(f"skipping unreadable image: {e}", stacklevel=2)
                continue
            t = torch.from_numpy(a.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)
            if self.hflip and torch.rand(()) < 0.5:
                t = t.flip(-1)
            return t
        raise E4EError(f"{self.root}: none of the {n} images could be read")
