"""Training and scoring the avatar attribute networks (e4e.nets.attributes) on a labelled folder.

In: DIR/labels.csv as `e4e data avatars` writes it: `file` (relative to DIR), `split` (train/test),
`seed`, clean label columns (0/1 ints are binary heads, names are categorical heads), then `opt_*` raw
generator options (ignored). Out: PATH.safetensors (the network, e4e.checkpoints.attributes), PATH.json
(per-attribute test accuracy beside the majority-class baseline), PATH.log.jsonl (training scalars) and
PATH.state.pt (resume state; an interrupted run with the same options continues from it, bit-exact on CPU).

Halves: the similarity network that trains e4e and the classifier that evaluates it must not share
training images, so the train split is cut in two by a hash of each file's base name:
part A = sha256(name)[0] < 128, part B = the rest (deterministic, independent of row order and of the
folder the data lives in; about half each). `part="all"` uses the whole train split. Scores are always
on the test split, which neither half contains.

Speed: the chosen images are decoded once (threads), resized to the network's input size and kept on the
device as uint8; batches are gathered, flipped and shifted (DiffAugment translation) on the device, and the
forward pass runs under bf16 autocast on CUDA. No colour augmentation: hair and skin colour are labels.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from e4e.errors import E4EError
from e4e.train.data import BatchPlan, DeviceOrder, decode_uint8, to_float
from e4e.train.runs import Deadline

NON_LABEL_COLUMNS = ("file", "split", "seed")
MAX_CLASSES = 64  # a categorical column with more distinct values is not a head (e.g. an id column)


# ------------------------------------------------------------------------------------------ labels


@dataclass
class LabelTable:
    """labels.csv as columns: files, splits, and label name -> list of string values (one per row)."""

    root: Path
    files: list[str]
    splits: list[str]
    columns: dict[str, list[str]]

    def rows(self, split: str, part: str = "all") -> list[int]:
        if part not in ("A", "B", "all"):
            raise E4EError(f"part {part!r}: use A, B or all")
        return [i for i, (f, s) in enumerate(zip(self.files, self.splits))
                if s == split and (part == "all" or half_of(f) == part)]


def half_of(file: str) -> str:
    """'A' or 'B': which disjoint half of the train split a file belongs to (hash of its base name)."""
    return "A" if hashlib.sha256(Path(file).name.encode("utf-8")).digest()[0] < 128 else "B"


def read_labels(data_dir) -> LabelTable:
    root = Path(data_dir)
    path = root / "labels.csv"
    if not root.is_dir():
        raise E4EError(f"{root}: no such folder")
    if not path.is_file():
        raise E4EError(f"{root}: no labels.csv (make one with 'e4e data avatars {root}')")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        names = list(reader.fieldnames or ())
        if not {"file", "split"} <= set(names):
            raise E4EError(f"{path}: needs 'file' and 'split' columns (has: {', '.join(names) or 'none'})")
        label_names = [n for n in names if n not in NON_LABEL_COLUMNS and not n.startswith("opt_")]
        files, splits, cols = [], [], {n: [] for n in label_names}
        for line, row in enumerate(reader, start=2):
            if None in row or any(row[n] is None for n in names):
                raise E4EError(f"{path}:{line}: wrong number of fields")
            files.append(row["file"])
            splits.append(row["split"])
            for n in label_names:
                v = row[n].strip()
                if not v:
                    raise E4EError(f"{path}:{line}: empty value in column {n!r}")
                cols[n].append(v)
    if not files:
        raise E4EError(f"{path}: no rows")
    return LabelTable(root, files, splits, cols)


def attribute_heads(table: LabelTable, names: list[str] | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """-> (binary head names, categorical head -> sorted vocabulary), from every row (train and test).

    A column whose values are all 0/1 is binary; other columns are categorical when they have at most
    MAX_CLASSES distinct values (others are skipped unless asked for by name, then it is an error)."""
    wanted = list(table.columns) if not names else names
    unknown = [n for n in wanted if n not in table.columns]
    if unknown:
        raise E4EError(f"{table.root / 'labels.csv'}: no label column(s) {', '.join(unknown)} "
                       f"(label columns: {', '.join(table.columns)})")
    binary, categorical = [], {}
    for n in wanted:
        values = sorted(set(table.columns[n]))
        if set(values) <= {"0", "1"}:
            binary.append(n)
        elif len(values) <= MAX_CLASSES:
            categorical[n] = values
        elif names:
            raise E4EError(f"label column {n!r} has {len(values)} distinct values, over {MAX_CLASSES}")
    if not binary and not categorical:
        raise E4EError(f"{table.root / 'labels.csv'}: no label columns to learn")
    return binary, categorical


def encode_labels(table: LabelTable, rows: list[int], net_cfg) -> torch.Tensor:
    """(len(rows), n_heads) class indices in cfg.heads() order; -1 for a value outside the vocabulary."""
    out = torch.full((len(rows), len(net_cfg.heads())), -1, dtype=torch.long)
    for k, name in enumerate(net_cfg.heads()):
        if name not in table.columns:
            raise E4EError(f"{table.root / 'labels.csv'}: no column {name!r}, which the network predicts")
        index = {v: i for i, v in enumerate(net_cfg.vocab(name))}
        col = table.columns[name]
        out[:, k] = torch.tensor([index.get(col[r], -1) for r in rows], dtype=torch.long)
    return out


# ------------------------------------------------------------------------------------------ images


def load_images_uint8(root, files: list[str], size: int, workers: int = 8, desc: str = "decode"):
    """-> (uint8 tensor (N, 3, size, size), kept positions): unreadable files are skipped with a warning."""
    from e4e.imageio import load_image

    root = Path(root)
    images, kept, bad = decode_uint8(lambda i: np.asarray(load_image(root / files[i], size, fit="stretch")),
                                     len(files), workers, desc)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s), first: {bad[0]}", stacklevel=2)
    if not kept:
        images = torch.empty(0, 3, size, size, dtype=torch.uint8)
    return images, kept


# ------------------------------------------------------------------------------------------ scoring


@torch.no_grad()
def score(net, images_u8: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> dict:
    """Per-head accuracy of `net` on pre-loaded images and encoded labels, beside the majority baseline
    (the share of the split's most common class: the best any constant answer can score)."""
    was_training = net.training
    net.eval()
    dev = next(net.parameters()).device
    heads = net.cfg.heads()
    preds = []
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    for b in range(0, len(images_u8), batch_size):
        x = to_float(images_u8[b:b + batch_size].to(dev, non_blocking=True))
        with amp:
            p = net.predict(x)
        preds.append(torch.stack([p[h] for h in heads], dim=1).cpu())
    net.train(was_training)
    pred = torch.cat(preds) if preds else torch.zeros(0, len(heads), dtype=torch.long)
    labels = labels.cpu()
    report = {"n": int(len(labels)), "attributes": {}}
    for k, name in enumerate(heads):
        y = labels[:, k]
        acc = float((pred[:, k] == y).float().mean()) if len(y) else float("nan")
        vocab = net.cfg.vocab(name)
        counts = torch.bincount(y[y >= 0], minlength=len(vocab))
        top = int(counts.argmax())
        report["attributes"][name] = {"accuracy": round(acc, 5),
                                      "majority": round(float(counts[top]) / max(len(y), 1), 5),
                                      "majority_class": vocab[top]}
    accs = [a["accuracy"] for a in report["attributes"].values()]
    majs = [a["majority"] for a in report["attributes"].values()]
    report["mean_accuracy"] = round(sum(accs) / len(accs), 5)
    report["mean_majority"] = round(sum(majs) / len(majs), 5)
    return report


def evaluate_attribute_net(net, data_dir, split: str = "test", batch_size: int = 256, workers: int = 8) -> dict:
    """Per-attribute accuracy of `net` on `split` of a labelled folder: {"n", "attributes": {name:
    {"accuracy", "majority", "majority_class"}}, "mean_accuracy", "mean_majority", "skipped"}."""
    table = read_labels(data_dir)
    rows = table.rows(split)
    if not rows:
        raise E4EError(f"{Path(data_dir) / 'labels.csv'}: no rows in split {split!r}")
    images, kept = load_images_uint8(table.root, [table.files[r] for r in rows], net.cfg.size, workers,
                                     desc=f"decode {split}")
    rows = [rows[i] for i in kept]
    report = score(net, images, encode_labels(table, rows, net.cfg), batch_size)
    report["skipped"] = len(table.rows(split)) - len(rows)
    return report


# ------------------------------------------------------------------------------------------ training


@dataclass
class ClassifierTrainConfig:
    VOCABULARY_SKIP: ClassVar[tuple] = ("out",)  # a .safetensors path, not a run folder: no --exp_dir
    data: str = ""
    out: str = ""  # PATH.safetensors; PATH.json, PATH.log.jsonl, PATH.state.pt beside it
    arch: str = "resnet"
    part: str = "all"  # A | B | all: which half of the train split (see half_of)
    seed: int = 0
    steps: int = 2000
    epochs: float = 0.0  # > 0: steps = ceil(epochs * images / batch) instead of `steps`
    batch: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: float = 0.05  # share of the steps with a linear learning-rate ramp; cosine decay after it
    size: int = 64
    width: int = 32
    blocks: int = 1
    attributes: list[str] = field(default_factory=list)  # empty: every label column
    time_limit_min: float = 0.0  # > 0: stop after this many minutes, checkpoint, score, write weights
    save_every: int = 500
    log_every: int = 50
    workers: int = 8
    half: bool = False  # store the weights as fp16
    device: str | None = None

    def paths(self) -> dict[str, Path]:
        out = Path(self.out)
        if out.suffix != ".safetensors":
            raise E4EError(f"--out {out}: give a .safetensors path")
        stem = out.with_suffix("")
        return {"weights": out, "report": stem.with_suffix(".json"), "log": Path(f"{stem}.log.jsonl"),
                "state": Path(f"{stem}.state.pt")}

    def run_key(self) -> dict:
        """The options a resumed run must share with the one that wrote the state."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("time_limit_min", "save_every", "log_every", "workers", "device", "out", "half")}


def lr_at(step: int, total: int, base: float, warmup: float) -> float:
    w = max(1, int(total * warmup))
    if step < w:
        return base * (step + 1) / w
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))


def _device(name: str | None) -> torch.device:
    if name:
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise E4EError(f"--device {name!r} is not a device (cpu, cuda, cuda:1, ...)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise E4EError(f"--device {name}: CUDA is not available here")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _batch(images: torch.Tensor, order, step: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step `step`'s augmented batch (gather, horizontal flip, random shift of up to 1/8 of the size) and
    its row indices; `order` is the run's e4e.train.data.DeviceOrder."""
    from e4e.train.augment import diff_augment

    idx, flip = order(step)
    x = to_float(images[idx])
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    gen = torch.Generator(device=images.device).manual_seed(seed * 1_000_003 + step)
    return diff_augment(x, "translation", gen), idx


def train_classifier(cfg: ClassifierTrainConfig, log=print, stop_at: int | None = None) -> dict:
    """Train, score on the test split, write weights + report; -> the report dict.

    stop_at: stop after that step as a time limit would (checkpoint, then score and write what exists)."""
    from e4e.checkpoints.attributes import save_attribute_net
    from e4e.checkpoints.io import torch_load
    from e4e.checkpoints.rosinality import atomic_torch_save
    from e4e.nets.attributes import AttributeNet, AttributeNetConfig

    if not cfg.data:
        raise E4EError("no training data: pass --data DIR (a folder with labels.csv, from 'e4e data avatars')")
    if not cfg.out:
        raise E4EError("no output: pass --out PATH.safetensors")
    paths = cfg.paths()
    if cfg.batch < 1 or cfg.steps < 1 or cfg.save_every < 1 or cfg.log_every < 1:
        raise E4EError("batch, steps, save_every and log_every must be >= 1")
    dev = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    table = read_labels(cfg.data)
    binary, categorical = attribute_heads(table, cfg.attributes or None)
    ncfg = AttributeNetConfig(arch=cfg.arch, size=cfg.size, width=cfg.width, blocks=cfg.blocks,
                              binary=binary, categorical=categorical)
    train_rows, test_rows = table.rows("train", cfg.part), table.rows("test")
    if not train_rows:
        raise E4EError(f"{cfg.data}: no training rows in part {cfg.part}")
    if not test_rows:
        raise E4EError(f"{cfg.data}: no test rows to score on")

    t_load = time.time()
    x_train, kept = load_images_uint8(table.root, [table.files[r] for r in train_rows], cfg.size, cfg.workers,
                                      desc=f"decode train/{cfg.part}")
    train_rows = [train_rows[i] for i in kept]
    x_test, kept = load_images_uint8(table.root, [table.files[r] for r in test_rows], cfg.size, cfg.workers,
                                     desc="decode test")
    test_rows = [test_rows[i] for i in kept]
    if len(train_rows) < cfg.batch:
        raise E4EError(f"{len(train_rows)} training images in part {cfg.part} but a batch of {cfg.batch}: "
                       "lower --batch")
    y_train = encode_labels(table, train_rows, ncfg).to(dev)
    y_test = encode_labels(table, test_rows, ncfg)
    x_train = x_train.to(dev)
    log(f"{len(train_rows)} train images (part {cfg.part}), {len(test_rows)} test, {cfg.size}px, "
        f"heads: {', '.join(ncfg.heads())}; loaded in {time.time() - t_load:.1f}s on {dev}")

    steps = math.ceil(cfg.epochs * len(train_rows) / cfg.batch) if cfg.epochs > 0 else cfg.steps
    net = AttributeNet(ncfg).to(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = BatchPlan(len(train_rows), cfg.batch, cfg.seed, source=cfg.data)
    order = DeviceOrder(plan, x_train.device)
    key = json.dumps({**cfg.run_key(), "steps": steps, "n_train": len(train_rows)}, sort_keys=True)

    step = 0
    if paths["state"].is_file():
        st = torch_load(paths["state"])
        if st.get("run") != key:
            raise E4EError(f"{paths['state']} is from a run with other options or data: delete it to start "
                           "afresh, or pass the same options to resume")
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        torch.set_rng_state(st["rng"])
        if dev.type == "cuda" and "cuda_rng" in st:
            torch.cuda.set_rng_state(st["cuda_rng"], dev)
        step = int(st["step"])
        log(f"resumed from {paths['state']} at step {step}")

    def save_state():
        st = {"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "run": key,
              "rng": torch.get_rng_state()}
        if dev.type == "cuda":
            st["cuda_rng"] = torch.cuda.get_rng_state(dev)
        atomic_torch_save(st, paths["state"])

    heads = ncfg.heads()
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    deadline = Deadline(cfg.time_limit_min)
    last = min(steps, stop_at) if stop_at is not None else steps
    paths["log"].parent.mkdir(parents=True, exist_ok=True)
    logf = open(paths["log"], "a")
    bar = tqdm(total=steps, initial=step, desc=f"train-classifier {cfg.arch}/{cfg.part}", dynamic_ncols=True)
    net.train()
    t0, s0, stopped = time.time(), step, None
    try:
        while step < last:
            if deadline.passed(step):
                stopped = f"time limit of {cfg.time_limit_min} min reached at step {step}"
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, cfg.lr, cfg.warmup)
            x, idx = _batch(x_train, order, step, cfg.seed)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = y_train[idx]
            with amp:
                logits = net(x)
            losses = [F.cross_entropy(logits[h].float(), y[:, k], ignore_index=-1) for k, h in enumerate(heads)]
            loss = torch.stack(losses).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == last:
                row = {"step": step, "loss": round(float(loss.detach()), 5), "lr": opt.param_groups[0]["lr"],
                       **{f"loss_{h}": round(float(v.detach()), 5) for h, v in zip(heads, losses)},
                       "images_per_s": round((step - s0) * cfg.batch / max(time.time() - t0, 1e-9), 1)}
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                bar.set_postfix(loss=row["loss"])
            if step % cfg.save_every == 0 and step < last:
                save_state()
    finally:
        bar.close()
        logf.close()
    if stopped is None and step < steps:
        stopped = f"stopped at step {step} of {steps}"
    if stopped:
        log(stopped)
    if step < steps:
        save_state()
    seconds = time.time() - t0

    report = score(net, x_test, y_test)
    report["skipped"] = len(table.rows("test")) - len(test_rows)
    report["train"] = {"data": str(cfg.data), "part": cfg.part, "n_images": len(train_rows), "arch": cfg.arch,
                       "size": cfg.size, "seed": cfg.seed, "steps": steps, "steps_done": step,
                       "complete": step >= steps, "batch": cfg.batch, "images_seen": step * cfg.batch,
                       "train_seconds_this_run": round(seconds, 1), "device": str(dev),
                       "split_rule": "part A: sha256(basename)[0] < 128; B: the rest"}
    save_attribute_net(paths["weights"], net.eval(), info=report, half=cfg.half)
    from e4e.outputs import atomic_write
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(paths["report"], lambda f: f.write(text), mode="w")
    if step >= steps and paths["state"].is_file():
        paths["state"].unlink()  # finished: a new run with these options starts afresh
    log(format_report(report))
    log(f"wrote {paths['weights']} and {paths['report']}")
    return report


def format_report(report: dict) -> str:
    lines = [f"test accuracy on {report['n']} images (majority-class baseline in brackets):"]
    w = max(len(n) for n in [*report["attributes"], "mean"])
    for name, a in report["attributes"].items():
        lines.append(f"  {name:<{w}} {a['accuracy']:.4f}  ({a['majority']:.4f}, {a['majority_class']})")
    lines.append(f"  {'mean':<{w}} {report['mean_accuracy']:.4f}  ({report['mean_majority']:.4f})")
    return "\n".join(lines)
