"""Training data for both trainers: a deterministic batch order and two ways to fetch its images.

- `BatchPlan(n, batch, seed)`: epoch e is randperm(n, seed + e); step s is the s-th global batch, and
  its horizontal flips come from a seeded draw too. Every process computes the same plan and takes its
  own slice, so 1 and K processes see the same global batches and a resumed run continues exactly.
- `DeviceImages`: the whole dataset decoded once into one uint8 tensor on the training device
  (60k images of 128x128 are 2.9 GB: nothing for an H200); a batch is one gather, the flip one `where`,
  the conversion to [-1, 1] one fused op. No worker processes, no host-device copies per step.
- `prefetch_batches`: the reference path: decode each batch's files from disk in a thread pool.
Both return the same pixels for the same plan (the same decoder, `e4e.imageio.load_image`).
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from e4e.errors import E4EError


class BatchPlan:
    """Deterministic data order: epoch e is randperm(n, seed + e); step s takes the s-th global batch."""

    def __init__(self, n: int, batch: int, seed: int, hflip: bool = True, source: str = "training data"):
        if batch < 1:
            raise E4EError(f"batch size must be at least 1, got {batch}")
        if n < batch:  # the one check of it (both trainers build their order here)
            raise E4EError(f"{source}: {n} readable images but a batch of {batch}: lower the batch size or add images")
        self.n, self.batch, self.seed, self.hflip = n, batch, seed, hflip
        self.per_epoch = n // batch
        self._cached = (None, None)  # (epoch, its permutation): one object, so a reader sees a matching pair

    def indices(self, step: int) -> list[int]:
        return self.index_tensor(step).tolist()

    def index_tensor(self, step: int) -> torch.Tensor:
        """Safe from several threads (the prefetcher's workers ask for steps of different epochs at once):
        the cached pair is read once and replaced whole, never updated field by field."""
        epoch, b = divmod(step, self.per_epoch)
        cached_epoch, perm = self._cached
        if cached_epoch != epoch:
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
            self._cached = (epoch, perm)
        return perm[b * self.batch:(b + 1) * self.batch]

    def epoch_tensors(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices (per_epoch, batch), flips (per_epoch, batch)) of every step of one epoch."""
        first = epoch * self.per_epoch
        idx = torch.stack([self.index_tensor(first + b) for b in range(self.per_epoch)])
        return idx, torch.stack([self.flips(first + b) for b in range(self.per_epoch)])

    def flips(self, step: int) -> torch.Tensor:
        if not self.hflip:
            return torch.zeros(self.batch, dtype=torch.bool)
        return torch.rand(self.batch, generator=torch.Generator().manual_seed(self.seed * 7919 + step + 1)) < 0.5


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [-1, 1], as ImageFolderDataset returns it."""
    return x.float().div(127.5).sub(1.0)


def decode_uint8(load, n: int, threads: int = 8, desc: str = "decode") -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode n images in a thread pool into one uint8 tensor (K, 3, H, W): `load(i)` returns image i as an
    (H, W, 3) uint8 array or raises E4EError. -> (tensor, kept indices, error lines); an image that fails, or
    whose size differs from the first readable one, is left out (one error line each)."""
    buf, kept, errors = None, [], []

    def one(i):
        try:
            return load(i), None
        except E4EError as e:
            return None, str(e)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i, (a, err) in enumerate(tqdm(pool.map(one, range(n), chunksize=64), total=n, desc=desc, unit="img",
                                          leave=False, disable=n < 2000)):
            if a is not None and buf is None:
                buf = np.empty((n, *a.shape), dtype=np.uint8)
            if a is not None and a.shape != buf.shape[1:]:
                a, err = None, f"image {i}: {a.shape[1]}x{a.shape[0]}, not {buf.shape[2]}x{buf.shape[1]} like the first"
            if a is None:
                errors.append(err)
                continue
            buf[len(kept)] = a
            kept.append(i)
    if buf is None:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8), kept, errors
    return torch.from_numpy(buf[:len(kept)]).permute(0, 3, 1, 2).contiguous(), kept, errors


class DeviceOrder:
    """A BatchPlan's indices and flips on `device`, one whole epoch per copy: a per-step copy from
    pageable host memory would synchronise the host with the GPU every step."""

    def __init__(self, plan: BatchPlan, device):
        self.plan, self.device = plan, torch.device(device)
        self._epoch, self._idx, self._flip = None, None, None

    def __call__(self, step: int, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (indices, flips) of step `step`, this rank's slice."""
        per = self.plan.batch // world
        epoch, b = divmod(step, self.plan.per_epoch)
        if epoch != self._epoch:
            idx, flip = self.plan.epoch_tensors(epoch)
            self._idx, self._flip, self._epoch = idx.to(self.device), flip.to(self.device), epoch
        return self._idx[b, rank * per:(rank + 1) * per], self._flip[b, rank * per:(rank + 1) * per]


class DeviceImages:
    """Every image of an ImageFolderDataset, decoded once, as a uint8 tensor on `device`."""

    def __init__(self, dataset, device, threads: int = 16, desc: str = "load images"):
        n = len(dataset)
        if n == 0:
            raise E4EError(f"{dataset.root}: no readable images")
        host, kept, _ = decode_uint8(dataset._load, n, threads, desc)
        if len(kept) < n:
            good = set(kept)
            dataset.skipped.extend(p for i, p in enumerate(dataset.paths) if i not in good)
        self.images = host.to(device, non_blocking=True)
        self.device = torch.device(device)
        self._order = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, plan: BatchPlan, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """The plan's batch `step` (this rank's slice), flipped as the plan says, as float in [-1, 1]."""
        if self._order is None or self._order.plan is not plan:
            self._order = DeviceOrder(plan, self.device)
        idx, flip = self._order(step, rank, world)
        x = self.images[idx]
        return to_float(torch.where(flip[:, None, None, None], x.flip(-1), x))


def prefetch_batches(dataset, plan: BatchPlan, start: int, stop: int, rank: int = 0, world: int = 1,
                     workers: int = 4):
    """Yields (step, images) for this rank, decoding ahead in a thread pool (deterministic content)."""
    per = plan.batch // world

    def load(step):
        idx = plan.indices(step)[rank * per:(rank + 1) * per]
        x = torch.stack([dataset[i] for i in idx])
        flip = plan.flips(step)[rank * per:(rank + 1) * per]
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    if workers <= 0:
        for s in range(start, stop):
            yield s, load(s)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ahead = {}
        for s in range(start, min(stop, start + 2 * workers)):
            ahead[s] = pool.submit(load, s)
        for s in range(start, stop):
            nxt = s + 2 * workers
            if nxt < stop:
                ahead[nxt] = pool.submit(load, nxt)
            yield s, ahead.pop(s).result()
