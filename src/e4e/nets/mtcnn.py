"""MTCNN face detector with 5 landmarks (Zhang et al. 2016), in plain PyTorch.

The three nets use the state-dict layout of the weights that the `facenet-pytorch` package ships
(`facenet_pytorch/data/{pnet,rnet,onet}.pt`, ~2 MB, converted from the original Caffe models), so those
files load with strict=True. The cascade follows facenet-pytorch's `detect_face` (thresholds
0.6/0.7/0.7, pyramid factor 0.709, minimum face 20 px, NMS 0.5 within a scale, 0.7 after P-Net and
R-Net, 0.7 "min"-overlap after O-Net). We never import facenet-pytorch itself: it pins old torch and
torchvision; `pip install facenet-pytorch --no-deps` is only a way to get the weight files.

Landmarks come in the order left eye, right eye, nose, left mouth corner, right mouth corner, where
left/right are as seen in the image (the subject's right eye is the image's left eye).
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from e4e.errors import E4EError

WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")
INSTALL_HINT = "pip install facenet-pytorch --no-deps"


class PNet(nn.Module):
    """Fully convolutional proposal net: 12x12 windows, stride 2."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box regression

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


def _flatten_caffe(x: torch.Tensor) -> torch.Tensor:
    # The dense layers were converted from Caffe, which flattens (C, W, H) rather than (C, H, W).
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_caffe(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net on 48x48 crops: score, box regression and 5 landmarks (x1..x5, y1..y5, box-relative)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_caffe(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


# ------------------------------------------------------------------------------------------ box helpers


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression -> kept indices, best first.

    union: IoU with areas (x2-x1)*(y2-y1) (torchvision's convention, used after P-Net and R-Net);
    min: intersection over the smaller area with the +1 pixel convention (the original MTCNN's
    'Min', used after O-Net so that a box inside a bigger one is dropped)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    one = 1.0 if mode == "min" else 0.0
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1 + one) * (y2 - y1 + one)
    order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    while order.numel():
        i, rest = order[0], order[1:]
        keep.append(i)
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + one).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + one).clamp(min=0)
        inter = w * h
        if mode == "min":
            overlap = inter / torch.minimum(area[i], area[rest])
        else:
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return torch.stack(keep)


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square about its centre (side = the longer side)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + (w - side) * 0.5
    y1 = boxes[:, 1] + (h - side) * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], 1)


def _regress(boxes: torch.Tensor, reg: torch.Tensor, plus_one: bool) -> torch.Tensor:
    # After P-Net the widths are x2-x1; after R-Net/O-Net the original used x2-x1+1. Kept as they are:
    # the nets were trained against exactly these boxes.
    one = 1.0 if plus_one else 0.0
    w = (boxes[:, 2] - boxes[:, 0] + one).unsqueeze(1)
    h = (boxes[:, 3] - boxes[:, 1] + one).unsqueeze(1)
    return boxes + reg * torch.cat([w, h, w, h], 1)


def _crops(img: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop each box (truncated to int, clipped to the image, 1-based inclusive as the original) and
    resize to size x size with area interpolation -> (crops, mask of boxes that gave a crop)."""
    h, w = img.shape[-2:]
    b = boxes.trunc().long()
    x1, y1 = b[:, 0].clamp(min=1), b[:, 1].clamp(min=1)
    x2, y2 = b[:, 2].clamp(max=w), b[:, 3].clamp(max=h)
    ok = (x2 > x1 - 1) & (y2 > y1 - 1)
    out = [F.interpolate(img[:, :, y1[k] - 1:y2[k], x1[k] - 1:x2[k]], size=(size, size), mode="area")
           for k in torch.nonzero(ok).flatten().tolist()]
    if not out:
        return img.new_zeros(0, 3, size, size), ok
    return torch.cat(out), ok


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


# ------------------------------------------------------------------------------------------ the detector


@dataclass
class Detection:
    box: np.ndarray  # (4,) x1, y1, x2, y2 in pixels
    score: float
    landmarks: np.ndarray  # (5, 2) x, y in pixels: eyes, nose, mouth corners (image left first)

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


def find_weights_dir() -> Path | None:
    """The folder with pnet.pt/rnet.pt/onet.pt inside an installed facenet-pytorch, or None. Found
    through the package metadata, without importing facenet_pytorch (whose import needs torchvision)."""
    try:
        dist = importlib.metadata.distribution("facenet-pytorch")
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(dist.locate_file("facenet_pytorch/data"))
    return folder if all((folder / f).is_file() for f in WEIGHT_FILES) else None


class MTCNN(nn.Module):
    def __init__(self, min_face_size: int = 20, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709):
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.min_face_size, self.thresholds, self.factor = min_face_size, tuple(thresholds), factor
        self.eval().requires_grad_(False)

    @classmethod
    def from_weights(cls, folder: str | Path | None = None, **kwargs) -> "MTCNN":
        """Load pnet.pt/rnet.pt/onet.pt from `folder`, or from the installed facenet-pytorch package."""
        if folder is None:
            folder = find_weights_dir()
            if folder is None:
                raise E4EError(f"face alignment needs the MTCNN landmark model: {INSTALL_HINT} "
                               "(or pass --landmarks FOLDER with pnet.pt, rnet.pt, onet.pt)")
        folder = Path(folder)
        model = cls(**kwargs)
        for name, net in zip(WEIGHT_FILES, (model.pnet, model.rnet, model.onet)):
            path = folder / name
            if not path.is_file():
                raise E4EError(f"{path}: MTCNN weight file not found (the folder needs {', '.join(WEIGHT_FILES)})")
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)
                net.load_state_dict(sd)
            except Exception as e:
                raise E4EError(f"{path}: not a facenet-pytorch MTCNN {name} state dict "
                               f"({' '.join(str(e).split())[:200]})") from None
        return model

    def scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / self.min_face_size
        side, scale, out = min(h, w) * m, m, []
        while side >= 12:
            out.append(scale)
            scale *= self.factor
            side *= self.factor
        return out

    @torch.no_grad()
    def detect(self, image) -> list[Detection]:
        """One RGB image (PIL, HxWx3 uint8 array, or a (3,H,W) 0..255 tensor) -> faces, largest first."""
        img = self._as_tensor(image)
        h, w = img.shape[-2:]
        boxes, reg = self._stage_p(img, h, w)
        if len(boxes):
            boxes, _ = self._stage_r(img, boxes)
        if not len(boxes):
            return []
        boxes, scores, points = self._stage_o(img, boxes)
        faces = [Detection(b.numpy().astype(np.float64), float(s), p.numpy().astype(np.float64))
                 for b, s, p in zip(boxes, scores, points)]
        return sorted(faces, key=lambda f: -f.area)

    def __call__(self, image) -> list[np.ndarray]:
        """LandmarkDetector protocol: the (5, 2) landmarks of each face, largest face first."""
        return [f.landmarks for f in self.detect(image)]

    def _as_tensor(self, image) -> torch.Tensor:
        if torch.is_tensor(image):
            t = image.float()
        else:
            a = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
            if a.ndim != 3 or a.shape[2] != 3:
                raise E4EError(f"MTCNN needs an RGB image, got an array of shape {a.shape}")
            t = torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)
        return t.unsqueeze(0).to(self.pnet.conv1.weight.device)

    def _stage_p(self, img, h, w):
        found = []
        for scale in self.scales(h, w):
            x = F.interpolate(img, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            reg, prob = self.pnet(_normalise(x))
            score = prob[0, 1]
            ys, xs = torch.nonzero(score >= self.thresholds[0], as_tuple=True)
            if not len(ys):
                continue
            cell = torch.stack([xs, ys], 1).float()
            q1 = ((2 * cell + 1) / scale).floor()
            q2 = ((2 * cell + 12) / scale).floor()
            b = torch.cat([q1, q2], 1)
            s = score[ys, xs]
            r = reg[0][:, ys, xs].t()
            keep = nms(b, s, 0.5)
            found.append((b[keep], s[keep], r[keep]))
        if not found:
            return torch.zeros(0, 4), torch.zeros(0, 4)
        b, s, r = (torch.cat(t) for t in zip(*found))
        keep = nms(b, s, 0.7)
        boxes = _square(_regress(b[keep], r[keep], plus_one=False))
        return boxes, s[keep]

    def _stage_r(self, img, boxes):
        crops, ok = _crops(img, boxes, 24)
        boxes = boxes[ok]
        if not len(boxes):
            return boxes, boxes.new_zeros(0)
        reg, prob = self.rnet(_normalise(crops))
        passed = prob[:, 1] > self.thresholds[1]
        boxes, score, reg = boxes[passed], prob[passed, 1], reg[passed]
        keep = nms(boxes, score, 0.7)
        return _square(_regress(boxes[keep], reg[keep], plus_one=True)), score[keep]

    def _stage_o(self, img, boxes):
        crops, ok = _crops(img, boxes, 48)
        boxes = boxes[ok]
        if not len(boxes):
            return boxes, boxes.new_zeros(0), boxes.new_zeros(0, 5, 2)
        reg, marks, prob = self.onet(_normalise(crops))
        passed = prob[:, 1] > self.thresholds[2]
        boxes, score, reg, marks = boxes[passed], prob[passed, 1], reg[passed], marks[passed]
        # landmarks are relative to the box before its final regression (+1 pixel convention)
        bw = (boxes[:, 2] - boxes[:, 0] + 1).unsqueeze(1)
        bh = (boxes[:, 3] - boxes[:, 1] + 1).unsqueeze(1)
        px = bw * marks[:, :5] + boxes[:, :1] - 1
        py = bh * marks[:, 5:] + boxes[:, 1:2] - 1
        points = torch.stack([px, py], 2)
        boxes = _regress(boxes, reg, plus_one=True)
        keep = nms(boxes, score, 0.7, mode="min")
        return boxes[keep], score[keep], points[keep]
