import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, missing, official_data_dir
from e4e.errors import E4EError
from e4e.nets import mtcnn
from e4e.nets.mtcnn import MTCNN, ONet, PNet, RNet, find_weights_dir, nms

OFFICIAL_DATA = official_data_dir()
FACE = OFFICIAL_DATA / "images" / "input_img.jpg"


@functools.cache
def _detector():
    return MTCNN.from_weights()


def detector() -> MTCNN:
    if find_weights_dir() is None:
        pytest.skip(f"MTCNN weights not installed ({mtcnn.INSTALL_HINT})")
    return _detector()


def face_photo(size: int = 512) -> Image.Image:
    """The 1024 px portrait at `size` (detection time grows with the pixel count)."""
    if not FACE.is_file():
        missing(f"face photo not found at {FACE} (set E4E_OFFICIAL_DATA)")
    return Image.open(FACE).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


def test_net_shapes():
    reg, prob = PNet()(torch.zeros(1, 3, 12 + 2 * 7, 12))
    assert reg.shape == (1, 4, 8, 1) and prob.shape == (1, 2, 8, 1)  # stride 2 over the height
    assert torch.allclose(prob.sum(1), torch.ones(1, 8, 1))
    reg, prob = RNet()(torch.zeros(3, 3, 24, 24))
    assert reg.shape == (3, 4) and prob.shape == (3, 2)
    reg, marks, prob = ONet()(torch.zeros(2, 3, 48, 48))
    assert reg.shape == (2, 4) and marks.shape == (2, 10) and prob.shape == (2, 2)


def test_nms_union_and_min():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # IoU(0,1) = 81/119 = 0.68; box 3 lies inside box 0 with IoU 0.16 but min-overlap 1
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [3, 0, 1, 2]
    assert nms(boxes, scores, 0.7, mode="min").tolist() == [3, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_scale_pyramid():
    m = MTCNN(min_face_size=20)
    s = m.scales(100, 200)
    assert s[0] == pytest.approx(0.6) and all(b == pytest.approx(a * 0.709) for a, b in zip(s, s[1:]))
    assert 100 * s[-1] >= 12 and 100 * s[-1] * 0.709 < 12  # smallest level still holds a 12 px window


def test_missing_weights_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(mtcnn, "find_weights_dir", lambda: None)
    with pytest.raises(E4EError, match="pip install facenet-pytorch --no-deps"):
        MTCNN.from_weights()
    with pytest.raises(E4EError, match="pnet.pt"):
        MTCNN.from_weights(tmp_path)
    for name in mtcnn.WEIGHT_FILES:
        torch.save({"nope": torch.zeros(1)}, tmp_path / name)
    with pytest.raises(E4EError, match="not a facenet-pytorch MTCNN"):
        MTCNN.from_weights(tmp_path)


def test_weights_load_from_folder(tmp_path):
    src = detector()
    for name, net in zip(mtcnn.WEIGHT_FILES, (src.pnet, src.rnet, src.onet)):
        torch.save(net.state_dict(), tmp_path / name)
    other = MTCNN.from_weights(tmp_path)
    for a, b in zip(src.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)


def test_detects_face_with_plausible_landmarks():
    m = detector()
    img = face_photo()
    w, h = img.size
    faces = m.detect(img)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.99
    x1, y1, x2, y2 = f.box
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and (x2 - x1) > 0.2 * w
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = f.landmarks
    assert np.all((f.landmarks >= [x1, y1]) & (f.landmarks <= [x2, y2]))  # inside the face box
    assert lex < nx < rex and lmx < nx < rmx  # nose between the eyes and between the mouth corners
    assert max(ley, rey) < ny < min(lmy, rmy)  # eyes above nose above mouth
    eye_dist = np.hypot(rex - lex, rey - ley)
    assert abs(rey - ley) < 0.15 * eye_dist  # a roughly upright portrait
    assert 0.25 * (x2 - x1) < eye_dist < 0.7 * (x2 - x1)
    # the LandmarkDetector call gives the same points; a mirrored photo mirrors them
    assert np.array_equal(m(img)[0], f.landmarks)
    flipped = m(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))[0]
    mirrored = np.stack([w - 1 - f.landmarks[:, 0], f.landmarks[:, 1]], 1)[[1, 0, 2, 4, 3]]
    assert np.abs(flipped - mirrored).max() < 0.06 * eye_dist  # measured 0.038


def test_no_face_in_blank_image():
    m = detector()
    assert m.detect(Image.new("RGB", (200, 160), (128, 128, 128))) == []
    assert m(np.zeros((50, 40, 3), np.uint8)) == []
