"""Paste-back geometry against a known alignment transform."""
import numpy as np
import pytest
from PIL import Image

from e4e.errors import E4EError
from e4e.pasteback import load_alignment, paste_back, save_alignment, soft_mask, source_to_aligned


def rotated_square(centre, side, angle_deg):
    """Quad corners in align order: top-left, bottom-left, bottom-right, top-right."""
    a = np.deg2rad(angle_deg)
    ex = np.array([np.cos(a), np.sin(a)]) * side  # along the aligned x axis
    ey = np.array([-np.sin(a), np.cos(a)]) * side  # along the aligned y axis
    q0 = np.asarray(centre, float) - (ex + ey) / 2
    return np.stack([q0, q0 + ey, q0 + ex + ey, q0 + ex])


def cut(source, quad, size):
    """The resampling e4e.align.align_face does once the quad is known."""
    return source.transform((size, size), Image.Transform.QUAD, tuple((quad + 0.5).flatten()),
                            Image.Resampling.BILINEAR)


@pytest.mark.parametrize("angle, side, size", [(0, 64, 64), (23, 90, 48), (-40, 70, 128)])
def test_a_point_of_the_aligned_face_lands_where_the_quad_says(angle, side, size):
    quad = rotated_square((110, 95), side, angle)
    u, v = int(0.3 * size), int(0.6 * size)  # a block centred on this aligned (continuous) point
    aligned = np.zeros((size, size, 3), np.uint8)
    r = max(1, size // 32)
    aligned[v - r:v + r, u - r:u + r] = 255
    pasted = np.asarray(paste_back(Image.new("RGB", (220, 200)), Image.fromarray(aligned), quad, feather=0))
    ys, xs = np.nonzero(pasted[..., 0] > 0)
    w = pasted[ys, xs, 0].astype(float)
    got = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    # block centre in aligned continuous coordinates is (u, v); source pixel index = continuous - 0.5
    want = quad[0] + (u / size) * (quad[3] - quad[0]) + (v / size) * (quad[1] - quad[0])
    assert np.abs(got - want).max() < 0.35, (got, want)


def test_affine_is_the_inverse_of_the_cut():
    quad = rotated_square((60, 50), 40, 31)
    a, b, c, d, e, f = source_to_aligned(quad, 40)
    for (x, y), (u, v) in zip(quad + 0.5, [(0, 0), (0, 40), (40, 40), (40, 0)]):
        assert np.allclose([a * x + b * y + c, d * x + e * y + f], [u, v])


def test_cut_then_paste_back_restores_the_photo():
    yy, xx = np.mgrid[:200, :220]
    photo = np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.uint8)  # smooth: resampling is near exact
    source = Image.fromarray(photo)
    quad = rotated_square((110, 95), 80, 17)
    back = np.asarray(paste_back(source, cut(source, quad, 80), quad, feather=0.1)).astype(int)
    assert np.abs(back - photo).max() <= 2
    # an edited face shows inside the quad and not outside it
    edited = Image.new("RGB", (80, 80), (255, 0, 0))
    out = np.asarray(paste_back(source, edited, quad, feather=0.1)).astype(int)
    assert (out[95, 110] == (255, 0, 0)).all() and (out[5, 5] == photo[5, 5]).all()


def test_soft_mask_is_one_inside_and_fades_out():
    m = np.asarray(soft_mask(100, 0.1)).astype(int)
    assert m[50, 50] == 255 and m[0, 0] < 40 and m[50, 1] < m[50, 5] < m[50, 12]
    with pytest.raises(E4EError):
        soft_mask(10, 0.6)


def test_alignment_record_round_trip(tmp_path):
    quad = rotated_square((10, 10), 8, 5)
    save_alignment(tmp_path, {"face": {"source": str(tmp_path / "photo.png"), "quad": quad.tolist(), "size": 64}})
    rec = load_alignment(tmp_path)
    assert np.allclose(rec["face"]["quad"], quad) and rec["face"]["source"] == tmp_path / "photo.png"
    with pytest.raises(E4EError, match="no alignment record"):
        load_alignment(tmp_path / "elsewhere")


def test_edit_paste_back_writes_the_photo_with_the_face_replaced(tmp_path, capsys):
    import torch

    import e4e
    from e4e.cli import main
    from e4e.latents import Latents, save_latents
    from tiny_inverters import save_tiny
    ckpt = save_tiny(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (90, 100, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    quad = rotated_square((50, 45), 40, 12)
    save_alignment(tmp_path, {"face": {"source": str(tmp_path / "photo.png"), "quad": quad.tolist(), "size": 32}})
    lat = e4e.invert(torch.zeros(1, 3, 32, 32), e4e.load(ckpt))
    save_latents(tmp_path / "latents.npz", Latents(["face"], lat.codes, lat.meta))
    rc = main(["edit", str(tmp_path / "latents.npz"), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt),
               "--sefa", "0", "--strength", "2", "--paste-back", str(tmp_path / "alignment.json"), "-q"])
    assert rc == 0 and "1 pasted back" in capsys.readouterr().out
    for label in ("original", "sefa0+2"):
        pasted = np.asarray(Image.open(tmp_path / "out" / "pasted" / label / "face.png"))
        face = Image.open(tmp_path / "out" / label / "face.png")
        assert pasted.shape == photo.shape
        assert np.array_equal(pasted[:5], photo[:5])  # far from the face: the photo itself
        assert np.array_equal(pasted, np.asarray(paste_back(Image.fromarray(photo), face, quad)))


@pytest.mark.parametrize("eye_dist, out_size", [(30, 64), (90, 32)])  # the second one takes align's shrink path
def test_paste_back_inverts_e4e_align(tmp_path, eye_dist, out_size):
    """Through e4e.align itself (its shrink/crop steps included): the recorded quad puts the aligned face
    back where it came from."""
    from e4e.align import align_files
    yy, xx = np.mgrid[:400, :440]
    period = 4.0 * eye_dist  # smooth at the aligned resolution, steep enough that 2 px show
    wave = lambda t: 127.5 + 120 * np.sin(2 * np.pi * t / period)  # noqa: E731
    photo = np.rint(np.stack([wave(xx), wave(yy), wave(xx + yy)], -1)).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    c = np.array([220.0, 190.0])
    lm = np.array([c + (-eye_dist / 2, 0), c + (eye_dist / 2, 0), c + (0, 0.4 * eye_dist),
                   c + (-0.35 * eye_dist, 0.8 * eye_dist), c + (0.35 * eye_dist, 0.8 * eye_dist)])

    class Fixed:
        def __call__(self, image):
            return [lm]
    records = {}
    list(align_files([tmp_path / "photo.png"], tmp_path / "aligned", Fixed(), out_size, records=records))
    save_alignment(tmp_path / "aligned", records)
    rec = load_alignment(tmp_path / "aligned")["photo"]
    face = Image.open(tmp_path / "aligned" / "photo.png")
    back = np.asarray(paste_back(Image.open(rec["source"]), face, rec["quad"], feather=0.15)).astype(int)
    inside = (slice(int(c[1]) - eye_dist // 2, int(c[1]) + eye_dist // 2),
              slice(int(c[0]) - eye_dist // 2, int(c[0]) + eye_dist // 2))
    err = np.abs(back[inside] - photo[inside]).mean()
    # a steep gradient: a quad off by 2 px (e.g. a missed shrink or crop offset) is far worse
    off = np.asarray(paste_back(Image.open(rec["source"]), face, rec["quad"] + 2, feather=0.15)).astype(int)
    assert err < 0.5 * np.abs(off[inside] - photo[inside]).mean()
