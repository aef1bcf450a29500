"""The one inversion pipeline: e4e invert, e4e.invert and Inverter.invert name and convert images alike;
multi-frame files and out-of-domain inputs are reported, never silent."""
import numpy as np
import torch
from PIL import Image

import e4e
from e4e.cli import main
from e4e.latents import load_latents
from e4e.pipeline import Frame, collect_inputs, domain_note, inverter_domain, load_batch
from tiny_inverters import save_tiny, tiny_inverter


def test_cli_api_and_inverter_give_the_same_names_and_codes(tmp_path):
    ckpt = save_tiny(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "wide.png")
    Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8)).save(tmp_path / "imgs" / "sub" / "gray.png")
    assert main(["invert", str(tmp_path / "imgs"), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt), "-q"]) == 0
    cli = load_latents(tmp_path / "out" / "latents.npz")
    inv = e4e.load(ckpt)
    api = e4e.invert([tmp_path / "imgs"], inv)
    assert api.names == cli.names == ["sub/gray", "wide"]
    assert torch.allclose(api.codes, cli.codes, atol=1e-5)
    assert any("grayscale" in n for n in api.meta["notes"])
    _, codes = inv.invert([Image.open(tmp_path / "imgs" / "sub" / "gray.png"), Image.open(tmp_path / "imgs" / "wide.png")])
    assert torch.allclose(codes, cli.codes, atol=1e-5)  # PIL images: the same conversion as files


def test_frames_are_explicit(tmp_path):
    frames = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (8, 8)).save(tmp_path / "still.png")
    assert [n for _, n in collect_inputs([tmp_path])] == ["clip", "still"]
    pairs = collect_inputs([tmp_path], frames="all")
    assert [n for _, n in pairs] == ["clip/000000", "clip/000001", "clip/000002", "still"]
    assert pairs[1][0] == Frame(tmp_path / "clip.gif", 1)
    names, x, notes = load_batch([tmp_path / "clip.gif"], 8)
    assert names == ["clip"] and "3 frames: inverted frame 0 only" in notes[0]


def test_photo_into_a_flat_background_model_is_warned(tmp_path, capsys):
    inv = tiny_inverter()
    inv.save(tmp_path / "emoji.safetensors", info={"dataset_type": "emoji_encode"})
    inv.checkpoint_path = tmp_path / "emoji.safetensors"
    domain = inverter_domain(inv)
    assert domain == {"name": "emoji", "input_size": 32}
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    flat = Image.new("RGB", (64, 64), "white")
    flat.paste((200, 30, 30), (16, 16, 48, 48))
    note = domain_note("photo.jpg", photo, domain)
    assert note.startswith("warning: photo.jpg looks out of the model's domain") and "400x300 px" in note
    assert domain_note("emoji.png", flat, domain) is None
    # real avatars (clothes, hair and hats reach the border in flat colours) are in their domain
    from e4e.assets import samples_dir
    avatar = {"name": "avatar", "input_size": 128}
    shipped = sorted(samples_dir().rglob("*.png"))
    assert len(shipped) > 20 and all(domain_note(f, Image.open(f), avatar) is None for f in shipped)
    smooth = Image.fromarray(np.broadcast_to(np.linspace(0, 255, 128)[:, None, None], (128, 128, 3))
                             .astype(np.uint8) + rng.integers(0, 12, (128, 128, 3), dtype=np.uint8))
    assert "busy border" in domain_note("gradient.png", smooth, avatar)  # a lit wall behind a face
    inv.save(tmp_path / "faces.safetensors", info={"dataset_type": "ffhq_encode"})
    inv.checkpoint_path = tmp_path / "faces.safetensors"
    assert inverter_domain(inv) is None  # photos are the domain there
    # through the command: the warning is printed and counted, the image still inverted
    photo.save(tmp_path / "photo.jpg")
    inv.checkpoint_path = None
    rc = main(["invert", str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "o"), "--checkpoint",
               str(tmp_path / "emoji.safetensors"), "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and len(load_latents(tmp_path / "o" / "latents.npz")) == 1
    assert "looks out of the model's domain" in out and "1 out-of-domain warning(s)" in out
