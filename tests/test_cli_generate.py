import numpy as np
import pytest
import torch
from PIL import Image

from e4e.checkpoints import save_rosinality
from e4e.cli import main
from e4e.cli.generate import parse_seeds
from e4e.errors import E4EError
from e4e.nets.stylegan2 import Generator, GeneratorConfig


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "g.pt"
    g = Generator(GeneratorConfig(size=16, style_dim=16, n_mlp=2, channel_max=8))
    save_rosinality(path, g, latent_avg=g.mean_latent(1000))
    return path


def test_parse_seeds():
    assert parse_seeds("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]
    for bad in ("a", "3-1", "", "-2"):
        with pytest.raises(E4EError):
            parse_seeds(bad)


def test_generate_writes_grid_and_latents(ckpt, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(ckpt), "--seeds", "0-5", "-o", str(tmp_path / "a")]) == 0
    w = np.load(tmp_path / "a" / "w.npy")
    assert w.shape == (6, 16)
    grid = Image.open(tmp_path / "a" / "grid.png")
    assert grid.size[0] > 16 * 3 and grid.mode == "RGB"
    # seeds are reproducible and independent of batching
    main(["generate", "--checkpoint", str(ckpt), "--seeds", "3", "-o", str(tmp_path / "b"), "--batch-size", "1"])
    assert np.allclose(np.load(tmp_path / "b" / "w.npy")[0], w[3], atol=1e-6)


def test_truncation_zero_collapses_to_the_mean(ckpt, tmp_path):
    assert main(["generate", "--checkpoint", str(ckpt), "--seeds", "0-2", "--truncation", "0",
                 "-o", str(tmp_path)]) == 0
    w = torch.from_numpy(np.load(tmp_path / "w.npy"))
    avg = torch.load(ckpt, weights_only=True)["latent_avg"]
    assert torch.allclose(w, avg.expand_as(w), atol=1e-6)


def test_bad_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "x.pt"
    bad.write_text("nope")
    assert main(["generate", "--checkpoint", str(bad), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("e4e: error:") and "\n" not in err


def test_bad_batch_size_is_one_line(ckpt, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(ckpt), "--seeds", "0-1", "-o", str(tmp_path / "o"),
                 "--batch-size", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--batch-size must be at least 1, got 0" in err and "\n" not in err
