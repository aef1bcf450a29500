"""Video workflow: a short generated clip inverted frame by frame, smoothed, edited and written back."""
import numpy as np
import pytest
import torch
from PIL import Image

from e4e.cli import main
from e4e.errors import E4EError
from e4e.latents import load_latents
from e4e.video import sequences, smooth_codes, write_clip
from tiny_inverters import save_tiny


def make_clip(path, n=5, size=32):
    """A square moving left to right over n frames, as an animated GIF."""
    frames = []
    for t in range(n):
        a = np.full((size, size, 3), 230, np.uint8)
        a[10:20, 3 + 4 * t:13 + 4 * t] = (200, 40, 40)
        frames.append(Image.fromarray(a))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)
    return path


def test_smooth_codes_is_a_centred_moving_average():
    codes = torch.randn(6, 2, 3)
    out = smooth_codes(codes, 3)
    assert torch.allclose(out[2], codes[1:4].mean(0)) and torch.allclose(out[0], codes[0:2].mean(0))
    assert torch.allclose(out[5], codes[4:6].mean(0))
    ramp = torch.arange(6.0).view(6, 1, 1).expand(6, 2, 3)
    assert torch.allclose(smooth_codes(ramp, 3)[1:5], ramp[1:5])  # a linear path is left alone inside
    assert torch.equal(smooth_codes(codes, 1), codes)
    with pytest.raises(E4EError):
        smooth_codes(codes, 0)


def test_sequences_group_frames_by_parent():
    names = ["clip/000001", "clip/000000", "still", "other/000000", "other/000001"]
    assert sequences(names) == {"clip": [1, 0], "frames": [2], "other": [3, 4]}


def test_write_clip_gif_and_mp4_without_ffmpeg(tmp_path, monkeypatch):
    frames = [Image.new("RGB", (8, 8), (10 * i, 0, 0)) for i in range(3)]
    with Image.open(write_clip(frames, tmp_path / "a.gif", fps=10)) as gif:
        assert gif.n_frames == 3 and gif.info["duration"] == 100
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(E4EError, match="needs an ffmpeg executable"):
        write_clip(frames, tmp_path / "a.mp4")


def test_clip_inverted_frame_by_frame_then_edited_into_clips(tmp_path, capsys):
    ckpt = save_tiny(tmp_path / "tiny.safetensors")
    clip = make_clip(tmp_path / "clip.gif")
    # without --frames all: frame 0 only, and a note says so
    assert main(["invert", str(clip), "-o", str(tmp_path / "one"), "--checkpoint", str(ckpt), "-q"]) == 0
    assert "5 frames: inverted frame 0 only" in capsys.readouterr().out
    assert main(["invert", str(clip), "-o", str(tmp_path / "inv"), "--checkpoint", str(ckpt), "-q",
                 "--frames", "all", "--video", "gif"]) == 0
    assert "1 reconstruction clip(s)" in capsys.readouterr().out
    with Image.open(tmp_path / "inv" / "video" / "clip.gif") as gif:
        assert gif.n_frames == 5
    lat = load_latents(tmp_path / "inv" / "latents.npz")
    assert lat.names == [f"clip/{t:06d}" for t in range(5)]
    one = load_latents(tmp_path / "one" / "latents.npz")
    # frame 0 is the same image either way (codes agree up to batch-size numerics)
    from e4e.imageio import load_image
    from e4e.pipeline import Frame, read_input
    assert np.array_equal(np.asarray(read_input(Frame(clip, 0))), np.asarray(load_image(clip)))
    assert torch.allclose(one.codes[0], lat.codes[0], atol=1e-5)
    assert len(set(map(bytes, lat.codes.numpy()))) == 5  # and the frames differ
    out = tmp_path / "edit"
    assert main(["edit", str(tmp_path / "inv" / "latents.npz"), "-o", str(out), "--checkpoint", str(ckpt),
                 "--sefa", "0", "--strength", "2", "--video", "gif", "--smooth", "3", "--fps", "8", "-q"]) == 0
    assert "2 clips" in capsys.readouterr().out
    for label in ("original", "sefa0+2"):
        frames = sorted((out / label / "clip").glob("*.png"))
        assert len(frames) == 5
        with Image.open(out / "video" / label / "clip.gif") as gif:
            assert gif.n_frames == 5 and gif.size == (32, 32)
            gif.seek(2)  # GIF quantises colours: frame 2 is nearest to the frame 2 PNG of all five
            g = np.asarray(gif.convert("RGB")).astype(int)
            err = [np.abs(g - np.asarray(Image.open(f).convert("RGB")).astype(int)).mean() for f in frames]
            assert int(np.argmin(err)) == 2
