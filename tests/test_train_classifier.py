"""Training the attribute networks (e4e.train.classifier, `e4e train-classifier`) on a synthetic labelled
folder, and the e4e trainer's avatar preset using such a network for L_sim."""
import json

import pytest
import torch

from attribute_data import make_avatar_folder
from e4e.checkpoints.attributes import load_attribute_net, save_attribute_net
from e4e.cli import main
from e4e.errors import E4EError
from e4e.nets.attributes import AttributeNet, AttributeNetConfig
from e4e.train.classifier import (ClassifierTrainConfig, attribute_heads, evaluate_attribute_net, half_of,
                                  read_labels, train_classifier)

TINY = dict(size=16, width=4, batch=16, workers=1, log_every=1)


@pytest.fixture(scope="module")
def avatars(tmp_path_factory):
    return make_avatar_folder(tmp_path_factory.mktemp("avatars"), n_train=64, n_test=32, size=32, seed=0)


def cfg(data, out, **kw):
    return ClassifierTrainConfig(data=str(data), out=str(out), **{**TINY, **kw})


def test_labels_and_heads_follow_the_csv(avatars):
    table = read_labels(avatars)
    assert len(table.rows("train")) == 64 and len(table.rows("test")) == 32
    assert "opt_top" not in table.columns and "seed" not in table.columns
    binary, categorical = attribute_heads(table)
    assert binary == ["smile", "glasses", "facial_hair", "hat"]
    assert categorical == {"hair_colour": ["black", "blonde", "none", "red"], "skin_colour": ["dark", "light"]}
    assert attribute_heads(table, ["hat", "skin_colour"]) == (["hat"], {"skin_colour": ["dark", "light"]})
    with pytest.raises(E4EError, match="no label column.*beard"):
        attribute_heads(table, ["beard"])


def test_halves_are_disjoint_deterministic_and_cover_train(avatars):
    table = read_labels(avatars)
    a, b = set(table.rows("train", "A")), set(table.rows("train", "B"))
    assert not a & b and a | b == set(table.rows("train")) and a and b
    assert half_of("train/000123.png") == half_of("elsewhere/000123.png")  # base name only
    names = [f"{i:06d}.png" for i in range(2000)]
    share = sum(half_of(n) == "A" for n in names) / len(names)
    assert 0.45 < share < 0.55
    with pytest.raises(E4EError, match="part 'C'"):
        table.rows("train", "C")


def test_bad_folders_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(E4EError, match="no such folder"):
        read_labels(tmp_path / "absent")
    with pytest.raises(E4EError, match="no labels.csv"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("name,label\na.png,1\n")
    with pytest.raises(E4EError, match="needs 'file' and 'split' columns"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,split,hat\na.png,train,\n")
    with pytest.raises(E4EError, match=r"labels.csv:2: empty value in column 'hat'"):
        read_labels(tmp_path)
    rc = main(["train-classifier", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "n.safetensors")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "no such folder" in err
    with pytest.raises(E4EError, match="give a .safetensors path"):
        train_classifier(cfg(tmp_path, tmp_path / "net.pt"))


def test_unreadable_images_are_skipped_with_a_warning(avatars, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(avatars, data)
    (data / "test" / "000000.png").write_bytes(b"broken")
    net = AttributeNet(AttributeNetConfig(size=16, width=4, binary=["hat"])).eval()
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        report = evaluate_attribute_net(net, data)
    assert report["n"] == 31 and report["skipped"] == 1


@pytest.mark.slow
def test_cli_training_learns_the_synthetic_attributes(avatars, tmp_path, capsys):
    out = tmp_path / "net.safetensors"
    rc = main(["train-classifier", "--data", str(avatars), "--out", str(out), "--arch", "resnet", "--part", "all",
               "--steps", "40", "--batch", "16", "--size", "16", "--width", "4", "--lr", "3e-3",
               "--workers", "1", "--seed", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "test accuracy on 32 images" in printed
    rows = [json.loads(line) for line in open(tmp_path / "net.log.jsonl")]
    assert rows[-1]["step"] == 40  # logged every 50 steps and at the end
    report = json.loads((tmp_path / "net.json").read_text())
    assert report["train"]["complete"] and report["train"]["steps_done"] == 40
    assert not (tmp_path / "net.state.pt").exists()  # finished: no resume state left behind
    # beats the best constant answer on the easy, large attributes
    for name in ("hat", "skin_colour", "hair_colour"):
        a = report["attributes"][name]
        assert a["accuracy"] > a["majority"] + 0.1, (name, a)
    # the library scorer gives the report's numbers
    net = load_attribute_net(out)
    again = evaluate_attribute_net(net, avatars)
    assert again["attributes"] == report["attributes"]


def test_loss_falls_and_beats_chance_in_a_short_run(avatars, tmp_path):
    c = cfg(avatars, tmp_path / "n.safetensors", steps=20, lr=1e-2, attributes=["hat", "skin_colour"])
    report = train_classifier(c, log=lambda *_: None)
    loss = [json.loads(line)["loss"] for line in open(tmp_path / "n.log.jsonl")]
    assert len(loss) == 20
    assert sum(loss[-5:]) / 5 < 0.75 * sum(loss[:5]) / 5, loss
    assert report["mean_accuracy"] > report["mean_majority"], report


@pytest.mark.parametrize("arch", ["resnet", "convnet"])  # convnet: dropout draws from the saved RNG
def test_resume_is_exact_on_cpu(avatars, tmp_path, arch):
    quiet = dict(log=lambda *_: None)
    whole = cfg(avatars, tmp_path / "whole.safetensors", steps=4, arch=arch, part="A", save_every=2)
    train_classifier(whole, **quiet)
    parts = cfg(avatars, tmp_path / "parts.safetensors", steps=4, arch=arch, part="A", save_every=2)
    first = train_classifier(parts, stop_at=2, **quiet)
    assert not first["train"]["complete"] and (tmp_path / "parts.state.pt").is_file()
    second = train_classifier(parts, **quiet)
    assert second["train"]["complete"] and second["train"]["steps_done"] == 4
    a, b = load_attribute_net(tmp_path / "whole.safetensors"), load_attribute_net(tmp_path / "parts.safetensors")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    # a state from other options is refused, not silently mixed in
    train_classifier(parts, stop_at=1, **quiet)
    other = cfg(avatars, tmp_path / "parts.safetensors", steps=4, arch=arch, part="A", lr=1e-2)
    with pytest.raises(E4EError, match="from a run with other options"):
        train_classifier(other, **quiet)


# ------------------------------------------------------------------------------ e4e trainer hookup


def _tiny_avatar_world(root):
    from e4e.checkpoints import save_rosinality
    from e4e.nets.stylegan2 import Generator, GeneratorConfig
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(size=128, style_dim=32, n_mlp=1, channel_max=4)).eval()
    save_rosinality(root / "g.pt", g, latent_avg=g.mean_latent(500))
    data = make_avatar_folder(root / "data", n_train=4, n_test=2, size=128, seed=1)
    table = read_labels(data)
    binary, categorical = attribute_heads(table)
    net = AttributeNet(AttributeNetConfig(size=16, width=4, binary=binary, categorical=categorical))
    save_attribute_net(root / "sim.safetensors", net.eval())
    return root


def test_e4e_trainer_builds_and_steps_with_the_avatar_preset(tmp_path):
    from e4e.losses import AttributeSimilarityLoss
    from e4e.train.e4e import E4ETrainConfig, E4ETrainer
    world = _tiny_avatar_world(tmp_path)
    base = dict(dataset_type="avatar_encode", train_data=str(world / "data"), stylegan_weights=str(world / "g.pt"),
                exp_dir=str(tmp_path / "exp"), lpips_lambda=0.0, id_lambda=0.5, batch_size=2, workers=0,
                board_interval=1, image_interval=10_000, val_interval=10_000, optim_name="adam", max_steps=1,
                encoder_widths=[8, 16, 24, 32], encoder_units=[1, 1, 1, 1], input_size=16, encoder_mode="ir")
    with pytest.raises(E4EError, match="needs the avatar similarity network: pass --sim-weights PATH, or set "
                                       "id_lambda=0"):
        E4ETrainer(E4ETrainConfig(**base))
    trainer = E4ETrainer(E4ETrainConfig(**base, sim_weights=str(world / "sim.safetensors")))
    assert isinstance(trainer.sim, AttributeSimilarityLoss)
    assert trainer.train_set[0].shape == (3, 128, 128)
    trainer.train()
    row = json.loads(open(tmp_path / "exp" / "log.jsonl").readline())
    assert 0 <= row["loss_id"] <= 2 and "id_improve" in row


def test_cli_train_passes_sim_weights(tmp_path, capsys):
    # e4e train's flags are generated from E4ETrainConfig (h/flows): check the resolved options
    import yaml

    from e4e.cli import main
    assert main(["train", "--dataset-type", "avatar_encode", "--sim-weights", "s.safetensors", "--dry-run"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["sim_weights"] == "s.safetensors" and cfg["dataset_type"] == "avatar_encode"
    assert main(["train", "--dataset-type", "avatars_encode", "--dry-run"]) == 0  # the other name, kept
    assert yaml.safe_load(capsys.readouterr().out)["dataset_type"] == "avatar_encode"


def test_time_limit_stops_cleanly_and_still_writes_weights_and_report(avatars, tmp_path):
    out = tmp_path / "n.safetensors"
    report = train_classifier(cfg(avatars, out, steps=50, time_limit_min=1e-9), log=lambda *_: None)
    assert report["train"]["steps_done"] == 0 and not report["train"]["complete"]
    assert out.is_file() and (tmp_path / "n.json").is_file() and (tmp_path / "n.state.pt").is_file()
    assert json.loads((tmp_path / "n.json").read_text())["train"]["complete"] is False


@pytest.mark.gpu
def test_cuda_bf16_training_path_matches_fp32_reference():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    torch.manual_seed(0)
    net = AttributeNet(AttributeNetConfig(size=64, binary=["a"], categorical={"c": ["x", "y", "z"]})).cuda().eval()
    x = torch.rand(8, 3, 64, 64, device="cuda") * 2 - 1
    with torch.no_grad():
        ref = net(x)
        fast_net = net.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = fast_net(x.contiguous(memory_format=torch.channels_last))
    for k in ref:
        scale = ref[k].abs().max().clamp_min(1e-3)
        assert float((fast[k].float() - ref[k]).abs().max() / scale) < 5e-2, k
