import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from e4e.align import (
    LandmarkDetector,
    align_face,
    align_image,
    eyes_and_mouth,
    face_quad,
    gaussian_blur,
    load_detector,
    quad_to_output,
)
from e4e.cli import main
from e4e.errors import E4EError
from test_mtcnn import detector, face_photo

# An upright synthetic face: eye centres and mouth corners, eyes 1 apart, mouth 1.1 below them.
EYE_L, EYE_R, MOUTH_L, MOUTH_R = (-0.5, 0.0), (0.5, 0.0), (-0.4, 1.1), (0.4, 1.1)
CANON = np.array([EYE_L, EYE_R, MOUTH_L, MOUTH_R])


def canonical_output(size: int) -> np.ndarray:
    """Where the FFHQ rule puts the upright face, worked out by hand: the quad is axis-aligned, half-side
    max(2 * 1, 1.8 * 1.1) = 2, centred 0.1 * 1.1 below the eye midpoint."""
    half, centre = 2.0, np.array([0.0, 0.11])
    return ((CANON - centre) / (2 * half) + 0.5) * size


def five_points(pts4: np.ndarray) -> np.ndarray:
    """Eyes + mouth corners -> MTCNN's 5-point order (nose between, unused by the alignment)."""
    nose = pts4.mean(0)
    return np.stack([pts4[0], pts4[1], nose, pts4[2], pts4[3]])


def similarity(pts, angle_deg, scale, shift):
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return pts @ rot.T * scale + np.asarray(shift)


@pytest.mark.parametrize("angle,scale,shift", [(0, 1, (0, 0)), (23, 57.0, (300, 210)), (-40, 3.5, (-7, 11)),
                                               (170, 120.0, (1000, 40))])
def test_quad_maps_any_pose_to_canonical(angle, scale, shift):
    pts = similarity(CANON, angle, scale, shift)
    quad = face_quad(five_points(pts))
    side = np.linalg.norm(quad[3] - quad[0])
    assert side == pytest.approx(4.0 * scale)  # 2 * max(2|e2e|, 1.8|e2m|)
    assert np.linalg.norm(quad[1] - quad[0]) == pytest.approx(side)
    assert np.dot(quad[3] - quad[0], quad[1] - quad[0]) == pytest.approx(0, abs=1e-9 * scale ** 2)
    out = quad_to_output(quad, pts, 1024)
    np.testing.assert_allclose(out, canonical_output(1024), atol=1e-6)


def test_68_points_give_the_same_quad_as_5():
    rng = np.random.default_rng(0)
    pts = similarity(CANON, 12, 80, (400, 300))
    lm68 = rng.uniform(0, 800, (68, 2))
    jitter = rng.normal(0, 3, (6, 2))
    lm68[36:42] = pts[0] + jitter - jitter.mean(0)  # an eye contour whose mean is the eye centre
    lm68[42:48] = pts[1] + jitter[::-1] - jitter.mean(0)
    lm68[48], lm68[54] = pts[2], pts[3]
    np.testing.assert_allclose(face_quad(lm68), face_quad(five_points(pts)), atol=1e-9)
    assert all(np.allclose(a, b) for a, b in zip(eyes_and_mouth(lm68), pts))
    with pytest.raises(E4EError, match="5 or 68"):
        face_quad(np.zeros((7, 2)))


def test_eye_to_mouth_sets_scale_for_long_faces():
    pts = CANON + [[0, 0], [0, 0], [0, 1.4], [0, 1.4]]  # mouth 2.5 below: 1.8 * 2.5 > 2 * 1
    quad = face_quad(five_points(pts))
    assert np.linalg.norm(quad[3] - quad[0]) == pytest.approx(2 * 1.8 * 2.5)


def test_gaussian_blur_matches_its_definition():
    sigma = 1.7
    r = int(4 * sigma + 0.5)
    img = np.zeros((31, 29, 2), np.float32)
    img[15, 14, 0] = 1.0
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    g /= g.sum()
    out = gaussian_blur(img, sigma)
    np.testing.assert_allclose(out[15 - r:15 + r + 1, 14 - r:14 + r + 1, 0], np.outer(g, g), atol=1e-7)
    assert np.abs(out[..., 1]).max() == 0  # channels stay separate
    const = np.full((9, 7, 3), 42.0, np.float32)
    np.testing.assert_allclose(gaussian_blur(const, 5.0), const, atol=1e-4)  # mirrored edges keep the mean
    edge = np.zeros((20, 1, 1), np.float32)
    edge[0] = 1.0  # mirror includes the edge pixel: the impulse's weight folds back onto itself
    col = gaussian_blur(edge, 1.0)[:, 0, 0]
    half = np.exp(-0.5 * np.arange(0, 5) ** 2)  # sigma 1: radius 4
    half /= 2 * half.sum() - half[0]
    assert col[0] == pytest.approx(half[0] + half[1])


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def dotted_face(size, pts, radius):
    img = Image.new("RGB", size, (110, 120, 130))
    d = ImageDraw.Draw(img)
    for (x, y), c in zip(pts, COLOURS):
        d.ellipse([x - radius, y - radius, x + radius, y + radius], fill=c)
    return img


def find_dots(img):
    a = np.asarray(img).astype(np.int32)
    found = []
    for c in COLOURS:
        mask = np.abs(a - c).sum(2) < 120
        ys, xs = np.nonzero(mask)
        assert len(xs), f"dot {c} missing from the aligned image"
        found.append((xs.mean() + 0.5, ys.mean() + 0.5))  # pixel centres
    return np.array(found)


@pytest.mark.parametrize("case", ["rotated", "near-edge (padding)", "large (shrink)", "supersampled"])
def test_aligned_pixels_land_on_canonical_positions(case):
    size, transform = 128, None
    if case == "rotated":
        canvas, pts, r = (400, 360), similarity(CANON, 25, 60, (190, 150)), 4
    elif case == "near-edge (padding)":
        canvas, pts, r = (300, 260), similarity(CANON, -15, 50, (40, 30)), 4
    elif case == "large (shrink)":
        canvas, pts, r = (1400, 1300), similarity(CANON, 8, 200, (700, 500)), 14
    else:
        canvas, pts, r, transform = (400, 360), similarity(CANON, -30, 60, (200, 150)), 4, 512
    lm = five_points(pts)
    out = align_face(dotted_face(canvas, pts, r), lm, output_size=size, transform_size=transform)
    assert out.size == (size, size) and out.mode == "RGB"
    np.testing.assert_allclose(find_dots(out), canonical_output(size), atol=1.0)


class FixedLandmarks:
    """A LandmarkDetector stub: the protocol is just a callable."""

    def __init__(self, faces):
        self.faces = faces

    def __call__(self, image):
        return self.faces


def test_align_image_uses_any_detector():
    pts_a = similarity(CANON, 0, 60, (120, 100))
    pts_b = similarity(CANON, 0, 30, (300, 100))
    det = FixedLandmarks([five_points(pts_a), five_points(pts_b)])
    assert isinstance(det, LandmarkDetector)
    img = dotted_face((400, 300), pts_a, 4)
    assert len(align_image(img, det, 64)) == 1
    assert len(align_image(img, det, 64, max_faces=None)) == 2
    assert align_image(img, FixedLandmarks([]), 64) == []
    with pytest.raises(E4EError, match="unknown landmark backend"):
        load_detector("nope")


def test_real_photo_realigns_to_canonical():
    """MTCNN on the portrait, align, detect again: the face now sits where the FFHQ rule puts it."""
    m = detector()
    img = face_photo(512)
    faces = align_image(img, m, 256)
    assert len(faces) == 1 and faces[0].size == (256, 256)
    again = m(faces[0])
    assert len(again) == 1
    eye_l, eye_r, mouth_l, mouth_r = np.stack(eyes_and_mouth(again[0]))
    assert abs(eye_l[1] - eye_r[1]) < 3.0  # eyes level
    assert abs((eye_l[0] + eye_r[0]) / 2 - 128) < 4.0  # centred
    # The FFHQ rule fixes the eye midpoint at y = 128 - 0.1 * |eye_to_mouth| * 256 / side; MTCNN's own
    # jitter (a few % of the eye distance, see test_mtcnn) allows a few pixels.
    quad = face_quad(again[0])
    side = np.linalg.norm(quad[3] - quad[0])
    e2m = np.linalg.norm((mouth_l + mouth_r) / 2 - (eye_l + eye_r) / 2)
    assert side == pytest.approx(256, rel=0.05)  # re-aligning the aligned face changes (almost) nothing
    assert (eye_l[1] + eye_r[1]) / 2 == pytest.approx(128 - 0.1 * e2m, abs=4.0)


def test_cli_align(tmp_path, capsys):
    detector()
    src = tmp_path / "in"
    src.mkdir()
    face_photo(512).save(src / "face.jpg")
    Image.new("RGB", (120, 100), "gray").save(src / "blank.png")
    out = tmp_path / "out"
    assert main(["align", str(src), "-o", str(out), "--size", "128"]) == 0
    err = capsys.readouterr().err
    assert "no face found in" in err and "blank.png" in err
    assert sorted(p.name for p in out.iterdir()) == ["alignment.json", "face.png"]  # quads for --paste-back
    assert Image.open(out / "face.png").size == (128, 128)
    assert list(json.loads((out / "alignment.json").read_text())) == ["face"]  # keyed by latents name
    assert main(["align", str(src / "blank.png"), "-o", str(out)]) == 2
    assert "no face found in any" in capsys.readouterr().err
    assert main(["align", str(src / "face.jpg"), "-o", str(out), "--landmarks", str(tmp_path)]) == 2
    assert "pnet.pt" in capsys.readouterr().err
