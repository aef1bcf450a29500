"""FFHQ-style face alignment, as the official e4e (`utils/alignment.py`) and the FFHQ dataset script do it.

From the eye centres and mouth corners an oriented square ("quad") is chosen: its side is
max(2 * |eye_to_eye|, 1.8 * |eye_to_mouth|) * 2, its x axis follows the eye line blended with the
eye-to-mouth direction, and its centre sits 0.1 * eye_to_mouth below the eyes. The image is then
shrunk (when the face is much larger than the output), cropped around the quad, padded by reflection
(with the padding blurred and faded to the median colour) when the quad leaves the image, and the quad
is resampled to a square. e4e uses output 256 / transform 256; FFHQ used 1024 / 4096.

Landmarks come from a pluggable `LandmarkDetector`: any callable mapping an RGB image to one (5, 2)
or (68, 2) array of (x, y) pixel positions per face, largest face first. 68 points follow dlib's
iBUG layout (the official path); 5 points are eyes, nose, mouth corners as MTCNN gives them. The
built-in backend is our own MTCNN (e4e.nets.mtcnn) on the weights shipped by `facenet-pytorch`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from e4e.errors import E4EError

E4E_SIZES = (256, 256)  # official e4e: output_size, transform_size
FFHQ_SIZES = (1024, 4096)
BACKENDS = ("mtcnn",)


@runtime_checkable
class LandmarkDetector(Protocol):
    def __call__(self, image: Image.Image) -> list[np.ndarray]:
        """RGB image -> per face a (5, 2) or (68, 2) float array of (x, y) pixels, largest face first."""
        ...


def load_detector(backend: str = "mtcnn", landmarks: str | os.PathLike | None = None) -> LandmarkDetector:
    """A landmark backend by name. landmarks: the model's file or folder (mtcnn: a folder with
    pnet.pt, rnet.pt, onet.pt); None looks for the model in installed packages."""
    if backend == "mtcnn":
        from e4e.nets.mtcnn import MTCNN
        return MTCNN.from_weights(landmarks)
    raise E4EError(f"unknown landmark backend {backend!r} (available: {', '.join(BACKENDS)})")


# ------------------------------------------------------------------------------------ alignment math


def eyes_and_mouth(landmarks) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(eye_left, eye_right, mouth_left, mouth_right), 'left' = the image's left, from 5 or 68 points.
    68: eye centres are the means of points 36-41 and 42-47, mouth corners points 48 and 54."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape == (68, 2):
        return lm[36:42].mean(0), lm[42:48].mean(0), lm[48], lm[54]
    if lm.shape == (5, 2):
        return lm[0], lm[1], lm[3], lm[4]
    raise E4EError(f"landmarks must be 5 or 68 (x, y) points, got shape {lm.shape}")


def face_quad(landmarks) -> np.ndarray:
    """The oriented crop square, (4, 2) corners: top-left, bottom-left, bottom-right, top-right."""
    eye_left, eye_right, mouth_left, mouth_right = eyes_and_mouth(landmarks)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) * 0.5 - eye_avg
    # x: the eye line averaged with the eye-mouth line turned by 90 degrees (robust to either one alone)
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def gaussian_blur(img: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Blur an (H, W, C) array over H and W like scipy.ndimage.gaussian_filter(img, [s, s, 0]):
    kernel radius int(truncate * sigma + 0.5), edges mirrored including the edge pixel, float64 sums.
    Convolved through FFTs: the kernel is ~80 taps wide for a typical face, too slow as a direct
    float64 convolution on CPU."""
    if sigma <= 0:
        return img.copy()
    r = int(truncate * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = torch.from_numpy(k / k.sum())
    t = torch.from_numpy(np.pad(img.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="symmetric"))
    for dim in (0, 1):
        n = t.shape[dim] + 2 * r  # room for the full linear convolution: no wrap-around
        shape = [1, 1, 1]
        shape[dim] = -1
        f = torch.fft.rfft(t, n=n, dim=dim) * torch.fft.rfft(k, n=n).view(shape)
        t = torch.fft.irfft(f, n=n, dim=dim).narrow(dim, 2 * r, img.shape[dim])
    return t.numpy().astype(img.dtype)


def align_face(image: Image.Image, landmarks, output_size: int = E4E_SIZES[0], transform_size: int | None = None,
               enable_padding: bool = True) -> Image.Image:
    """Crop and rotate one face to the FFHQ layout -> RGB image output_size x output_size.
    transform_size: resolution of the quad resampling before the final downscale (default output_size,
    as e4e; FFHQ used 4096 for 1024)."""
    transform_size = transform_size or output_size
    img = image.convert("RGB")
    quad = face_quad(landmarks)
    qsize = np.hypot(*(quad[3] - quad[0]))

    shrink = _shrink_factor(quad, output_size)
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
            int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, img.size[0]), min(crop[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    pad = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
           int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.size[0] + border, 0), max(pad[3] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        img, quad = _pad_and_fade(img, quad, pad, qsize)

    img = img.transform((transform_size, transform_size), Image.Transform.QUAD, tuple((quad + 0.5).flatten()),
                        Image.Resampling.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return img


def _shrink_factor(quad: np.ndarray, output_size: int) -> int:
    """align_face first downsizes the photo by this integer factor when the face is much larger than
    the output (> 1 means it does)."""
    return int(np.floor(np.hypot(*(quad[3] - quad[0])) / output_size * 0.5))


def source_quad(image_size: tuple[int, int], landmarks, output_size: int) -> np.ndarray:
    """The quad, in source pixels, that align_face's output really samples (what paste-back inverts):
    face_quad, except after the shrink step, whose indexing (kept as the official code has it) moves
    the sampled square by about (shrink - 1) / 2 px right and down."""
    quad = face_quad(landmarks)
    shrink = _shrink_factor(quad, output_size)
    if shrink <= 1:
        return quad
    w, h = image_size
    rsize = (int(np.rint(float(w) / shrink)), int(np.rint(float(h) / shrink)))
    return (quad / shrink + 0.5) * np.array([w / rsize[0], h / rsize[1]]) - 0.5


def _pad_and_fade(img: Image.Image, quad: np.ndarray, pad, qsize: float):
    """Mirror-pad, then blend the padding towards a blurred copy and the median colour, more so
    further from the original pixels, so the border reads as out-of-focus background."""
    pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
    a = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
    h, w, _ = a.shape
    y, x, _ = np.ogrid[:h, :w, :1]
    mask = np.maximum(1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
                      1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]))
    blur = qsize * 0.02
    a += (gaussian_blur(a, blur) - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    a += (np.median(a, axis=(0, 1)) - a) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)), "RGB"), quad + pad[:2]


def quad_to_output(quad: np.ndarray, points, output_size: int) -> np.ndarray:
    """Where `points` (N, 2) of the source image land in the aligned image (the quad is a square, so
    the map is a similarity). For checking alignments and for moving landmarks along."""
    quad = np.asarray(quad, dtype=np.float64)
    ex, ey = quad[3] - quad[0], quad[1] - quad[0]
    d = np.asarray(points, dtype=np.float64) - quad[0]
    u = d @ ex / (ex @ ex)
    v = d @ ey / (ey @ ey)
    return np.stack([u, v], 1) * output_size


# ------------------------------------------------------------------------------------ whole images


def align_image(image: Image.Image, detector: LandmarkDetector, output_size: int = E4E_SIZES[0],
                transform_size: int | None = None, max_faces: int | None = 1) -> list[Image.Image]:
    """Detect faces and align each (largest first, at most max_faces; None = all). [] if none found."""
    faces = list(detector(image.convert("RGB")))
    if max_faces is not None:
        faces = faces[:max_faces]
    return [align_face(image, lm, output_size, transform_size) for lm in faces]


def align_files(paths, out_dir: str | os.PathLike, detector: LandmarkDetector, output_size: int = E4E_SIZES[0],
                transform_size: int | None = None, max_faces: int | None = 1, records: dict | None = None):
    """Align every image file into out_dir as <stem>.png (<stem>_<k>.png for further faces).
    Yields (source path, list of written paths, reason): an unreadable image is skipped with its reason
    (and the others still aligned); an empty list and no reason means no face was found.
    records: filled with {name: {"source", "quad", "size"}} per face, what paste-back needs
    (`e4e.pasteback.save_alignment` writes it)."""
    from e4e.imageio import load_image
    from e4e.outputs import safe_output_path, writable_dir
    out_dir = writable_dir(out_dir)
    used: set[str] = set()
    for path in paths:
        try:
            image = load_image(path)
        except E4EError as e:
            yield path, [], str(e)
            continue
        landmarks = list(detector(image.convert("RGB")))[:max_faces]
        written = []
        for k, lm in enumerate(landmarks):
            name = _unique(path.stem if k == 0 else f"{path.stem}_{k}", used)
            dst = safe_output_path(out_dir, f"{name}.png")
            align_face(image, lm, output_size, transform_size).save(dst)
            written.append(dst)
            if records is not None:
                records[name] = {"source": str(Path(path).resolve()),
                                 "quad": source_quad(image.size, lm, output_size).tolist(),
                                 "size": output_size}
        yield path, written, None


def _unique(stem: str, used: set[str]) -> str:
    """Two inputs a/x.jpg and b/x.jpg must not overwrite each other's output."""
    name, i = stem, 1
    while name in used:
        name, i = f"{stem}-{i}", i + 1
    used.add(name)
    return name
