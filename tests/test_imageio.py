import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from e4e.errors import E4EError
from e4e.imageio import (fit_square, iter_image_paths, load_image, make_grid, save_grid, to_pil, to_rgb,
                         to_tensor)


def rgb_at(im, xy):
    return tuple(im.getpixel(xy))


def expect_error(path, *words, **kw):
    with pytest.raises(E4EError) as e:
        load_image(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    for w in words:
        assert w in msg.lower(), msg
    return msg


# --- colour modes -----------------------------------------------------------------------------------

def test_grayscale_becomes_rgb(tmp_path):
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(a, "L").save(tmp_path / "g.png")
    im = load_image(tmp_path / "g.png")
    assert im.mode == "RGB" and im.size == (16, 16)
    out = np.asarray(im)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], a)


def test_one_bit_and_cmyk(tmp_path):
    Image.new("1", (8, 8), 1).save(tmp_path / "b.png")
    assert rgb_at(load_image(tmp_path / "b.png"), (0, 0)) == (255, 255, 255)
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    r, g, b = rgb_at(load_image(tmp_path / "c.jpg"), (4, 4))
    assert r > 200 and g < 60 and b < 60  # pure red in CMYK


def test_rgba_composited_on_background(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 255          # red
    a[0, 0, 3] = 255         # opaque
    a[0, 1, 3] = 0           # fully transparent
    a[0, 2, 3] = 128         # half
    Image.fromarray(a, "RGBA").save(tmp_path / "t.png")
    white = load_image(tmp_path / "t.png")
    assert white.mode == "RGB"
    assert rgb_at(white, (0, 0)) == (255, 0, 0)
    assert rgb_at(white, (1, 0)) == (255, 255, 255)
    r, g, b = rgb_at(white, (2, 0))
    assert r == 255 and 120 <= g <= 135 and g == b
    black = load_image(tmp_path / "t.png", background="black")
    assert rgb_at(black, (1, 0)) == (0, 0, 0)
    grey = load_image(tmp_path / "t.png", background=(10, 20, 30))
    assert rgb_at(grey, (1, 0)) == (10, 20, 30)
    with pytest.raises(E4EError, match="colour"):
        load_image(tmp_path / "t.png", background="not-a-colour")


def test_la_and_palette_transparency(tmp_path):
    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((0, 0), (0, 255))
    la.save(tmp_path / "la.png")
    im = load_image(tmp_path / "la.png")
    assert rgb_at(im, (0, 0)) == (0, 0, 0) and rgb_at(im, (1, 1)) == (255, 255, 255)

    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.save(tmp_path / "p.png", transparency=1)   # palette index 1 (green) is transparent
    im = load_image(tmp_path / "p.png")
    assert rgb_at(im, (0, 0)) == (0, 0, 255) and rgb_at(im, (2, 2)) == (255, 255, 255)

    p.save(tmp_path / "p.gif", transparency=1)
    assert rgb_at(load_image(tmp_path / "p.gif"), (2, 2)) == (255, 255, 255)


def test_16bit_png_scaled_not_truncated(tmp_path):
    vals = np.array([[0, 257 * 100, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(vals).save(tmp_path / "16.png")
    assert Image.open(tmp_path / "16.png").mode.startswith("I")
    out = np.asarray(load_image(tmp_path / "16.png"))[0, :, 0]
    np.testing.assert_array_equal(out, [0, 100, 128, 255])
    # mode "I" (32-bit container, 16-bit data) and float images take the same path
    assert np.asarray(to_rgb(Image.fromarray(vals.astype(np.int32), "I")))[0, 3, 0] == 255
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    np.testing.assert_array_equal(np.asarray(to_rgb(f))[0, :, 1], [0, 128, 255])


def test_exif_orientation_and_first_frame(tmp_path):
    im = Image.new("RGB", (20, 10), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (10, 20)

    frames = [Image.new("RGB", (8, 8), c) for c in ("blue", "red")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    r, g, b = rgb_at(load_image(tmp_path / "anim.gif"), (4, 4))
    assert b > 200 and r < 50


# --- broken input -------------------------------------------------------------------------------------

def test_missing_empty_folder_and_text(tmp_path):
    expect_error(tmp_path / "nope.png", "no such file")
    (tmp_path / "empty.png").write_bytes(b"")
    expect_error(tmp_path / "empty.png", "empty")
    (tmp_path / "fake.png").write_text("hello, I am not a picture\n")
    expect_error(tmp_path / "fake.png", "not an image")
    (tmp_path / "dir.png").mkdir()
    expect_error(tmp_path / "dir.png", "folder")


@pytest.mark.parametrize("fmt,keep", [("JPEG", 0.5), ("PNG", 0.5), ("PNG", 0.95), ("JPEG", 0.02)])
def test_truncated_files(tmp_path, fmt, keep):
    rng = np.random.default_rng(0)
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[:max(1, int(len(data) * keep))])
    expect_error(path)


def _png_with_header_size(path, width, height):
    """A valid 1x1 PNG whose IHDR claims width x height: Pillow reads the header, never the pixels."""
    import io
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data[12:29]          # b'IHDR' + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))


def test_huge_image_refused_cleanly(tmp_path):
    path = tmp_path / "huge.png"
    _png_with_header_size(path, 20000, 20000)   # 400 Mpx: over our limit and Pillow's bomb limit
    expect_error(path, "too large", "limit")
    expect_error(path, "too large", "decompression", max_pixels=None)  # Pillow's own DecompressionBombError, reworded
    _png_with_header_size(path, 5000, 5000)     # 25 Mpx: under the default limit, over a small one
    expect_error(path, "limit", max_pixels=1_000_000)


def test_big_jpeg_decoded_at_reduced_scale(tmp_path):
    Image.new("RGB", (2048, 1024), "green").save(tmp_path / "big.jpg", quality=50)
    expect_error(tmp_path / "big.jpg", "limit", max_pixels=500_000)
    im = load_image(tmp_path / "big.jpg", size=64, max_pixels=500_000)
    assert im.size == (64, 64)


# --- resizing, tensors, grids -----------------------------------------------------------------------

def test_fit_modes():
    im = Image.new("RGB", (40, 20), "red")
    assert fit_square(im, 16, "crop").size == (16, 16)
    assert rgb_at(fit_square(im, 16, "crop"), (0, 0)) == (255, 0, 0)
    padded = fit_square(im, 16, "pad", background="blue")
    assert padded.size == (16, 16)
    assert rgb_at(padded, (8, 0)) == (0, 0, 255) and rgb_at(padded, (8, 8)) == (255, 0, 0)
    assert fit_square(im, (10, 30), "stretch").size == (10, 30)
    with pytest.raises(E4EError):
        fit_square(im, 16, "squash")


def test_tensor_roundtrip():
    rng = np.random.default_rng(1)
    arrs = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(3)]
    ims = [Image.fromarray(a) for a in arrs]
    t = to_tensor(ims)
    assert t.shape == (3, 3, 6, 5) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert to_tensor(ims[0]).shape == (1, 3, 6, 5)
    back = to_pil(t)
    for a, b in zip(arrs, back):
        np.testing.assert_array_equal(a, np.asarray(b))
    wild = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).view(1, 5, 1).expand(3, 5, 2)
    single = to_pil(wild)  # out-of-range values are clamped, not wrapped
    np.testing.assert_array_equal(np.asarray(single)[:, 0, 0], [0, 0, 128, 255, 255])
    with pytest.raises(E4EError, match="size"):
        to_tensor([ims[0], Image.new("RGB", (2, 2))])


def test_save_grid(tmp_path):
    colors = torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, 1], [-1, -1, -1]], dtype=torch.float32)
    images = colors[:, :, None, None].expand(-1, -1, 4, 6).contiguous()
    path = save_grid(images, tmp_path / "sub" / "grid.png", nrow=2)
    g = Image.open(path)
    assert g.size == (2 * 6 + 3 * 2, 3 * 4 + 4 * 2)
    assert rgb_at(g, (2, 2)) == (255, 0, 0)          # image 0, row 0 col 0
    assert rgb_at(g, (2 + 6 + 2, 2)) == (0, 255, 0)  # image 1, row 0 col 1
    assert rgb_at(g, (2, 2 + 4 + 2)) == (0, 0, 255)  # image 2, row 1 col 0
    assert rgb_at(g, (0, 0)) == (0, 0, 0)            # padding
    pil_grid = make_grid(to_pil(images), nrow=2, pad_color="white")
    assert pil_grid.size == g.size and rgb_at(pil_grid, (0, 0)) == (255, 255, 255)


def test_iter_image_paths(tmp_path):
    for rel in ["b/2.png", "b/1.JPG", "a.png", "c/d/e.webp", ".hidden/x.png", "b/._junk.png", "notes.txt"]:
        p = tmp_path / "root" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    root = tmp_path / "root"
    got = [p.relative_to(root).as_posix() for p in iter_image_paths(root)]
    assert got == ["a.png", "b/1.JPG", "b/2.png", "c/d/e.webp"]
    assert list(iter_image_paths(str(root))) == list(iter_image_paths([root]))
    # explicit file (any extension), glob, and duplicates dropped
    got = list(iter_image_paths([root / "notes.txt", str(root / "b" / "*"), root / "b" / "2.png"]))
    assert [p.name for p in got] == ["notes.txt", "1.JPG", "2.png"]
    assert [p.name for p in iter_image_paths(str(root / "**" / "*.webp"))] == ["e.webp"]
    with pytest.raises(E4EError, match="no such file"):
        list(iter_image_paths(root / "missing"))
    with pytest.raises(E4EError, match="no image files match"):
        list(iter_image_paths(str(root / "*.gif")))
