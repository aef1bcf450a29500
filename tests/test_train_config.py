"""`e4e train` options: config files, generated flags, presets, --dry-run, --resume RUN_DIR, and what a
run writes (one checkpoint file, a validation grid)."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from e4e.cli import main
from e4e.errors import E4EError
from e4e.train.config import build_config, field_help
from e4e.train.e4e import PRESETS, E4ETrainConfig, resolve_config

REPO = Path(__file__).resolve().parents[1]


def test_every_option_is_documented_and_listed_in_help(capsys):
    docs = field_help(E4ETrainConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(E4ETrainConfig)} and all(docs.values())
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(E4ETrainConfig):
        assert f"--{f.name}" in text, f.name
        assert f"(default: {f.default!r})" in text, f.name
    assert "--stylegan-weights" in text and "--generator" in text  # dashes and the old name still work


@pytest.mark.parametrize("name", ["ffhq", "emoji", "avatars"])
def test_shipped_configs_parse(name):
    cfg = resolve_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.dataset_type in PRESETS and cfg.train_data and cfg.stylegan_weights
    if name != "ffhq":
        assert cfg.id_lambda == 0 and cfg.perceptual == "efficientnet"


def test_ffhq_config_is_the_official_recipe():
    cfg = resolve_config(REPO / "configs" / "ffhq.yaml")
    assert (cfg.w_discriminator_lambda, cfg.progressive_start, cfg.id_lambda, cfg.use_w_pool,
            cfg.start_from_latent_avg, cfg.max_steps, cfg.batch_size) == (0.1, 20000, 0.5, True, True, 200000, 8)


def test_preset_defaults_then_file_then_flags(tmp_path):
    assert resolve_config(None, ["dataset_type=emoji_encode"]).id_lambda == 0.0  # emoji has no ID network
    assert resolve_config(None, ["dataset_type=ffhq_encode"]).id_lambda == 0.1  # the official default
    (tmp_path / "c.yaml").write_text("dataset_type: emoji_encode\nid_lambda: 0.3\nbatch_size: 2\n")
    cfg = resolve_config(tmp_path / "c.yaml", ["batch_size=16", "encoder_widths=[8,16,24,32]"])
    assert (cfg.id_lambda, cfg.batch_size, cfg.encoder_widths) == (0.3, 16, [8, 16, 24, 32])


@pytest.mark.parametrize("text, message", [
    ("batch_sise: 3\n", "unknown option"),
    ("batch_size: three\n", "not a valid int"),
    ("- a\n- b\n", "must be a mapping"),
    ("a: [\n", "cannot parse config"),
])
def test_bad_config_files_are_one_line(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(E4EError, match=message):
        build_config(E4ETrainConfig, tmp_path / "c.yaml")


def test_dry_run_prints_flags_resolved(capsys):
    rc = main(["train", "--config", str(REPO / "configs" / "emoji.yaml"), "--max-steps", "7", "--generator", "g.pt",
               "--use_w_pool", "false", "--bf16", "--dry-run"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert rc == 0 and cfg["max_steps"] == 7 and cfg["stylegan_weights"] == "g.pt"
    assert cfg["use_w_pool"] is False and cfg["bf16"] is True and cfg["encoder_units"] == [2, 2, 3, 2]


def test_checkpoint_path_and_encoder_init_together_are_one_line(tmp_path, capsys):
    rc = main(["train", "--config", str(REPO / "configs" / "emoji.yaml"), "--generator", "g.pt",
               "--checkpoint_path", "a.pt", "--encoder_init", "b.pt", "--exp_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoint_path and encoder_init both given" in err and "Traceback" not in err


@pytest.mark.parametrize("field,value", [("impl", "turbo"), ("compile", "maybe")])
def test_bad_impl_and_compile_are_one_line(field, value):
    with pytest.raises(E4EError, match=f"{field} {value!r}"):
        E4ETrainConfig(train_data="d", stylegan_weights="g.pt", **{field: value}).validate()


def test_resume_needs_a_run_folder(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run folder (no opts.json)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 16 px generator and 12 images with a labels.csv train/test split (9 / 3)."""
    from train_world import train_world
    return train_world(tmp_path_factory.mktemp("trainworld"), 12, n_test=3, mean_samples=500)


def test_run_writes_one_checkpoint_a_val_grid_and_resumes_from_its_folder(world, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--dataset-type", "emoji_encode", "--train-data", str(world / "data"), "--generator",
            str(world / "g.pt"), "--exp-dir", str(run), "--max-steps", "2", "--batch-size", "2",
            "--lpips-lambda", "0", "--optim-name", "adam", "--workers", "0", "--val-interval", "2",
            "--encoder-widths", "[8,16,24,32]", "--encoder-units", "[1,1,1,1]", "--input-size", "16",
            "--encoder-mode", "ir", "--test-batch-size", "3", "--threads", "1"]
    assert main(args) == 0
    ck = run / "checkpoints"
    last, best = ck / "last.pt", ck / "best_model.pt"
    # best_model.pt is the same file as last.pt (a hard link), not a second copy
    assert last.is_file() and best.is_file() and last.stat().st_ino == best.stat().st_ino
    assert sorted(p.name for p in ck.iterdir()) == ["best.json", "best_model.pt", "last.pt"]
    assert (run / "images" / "val_000002.png").is_file()
    # --resume RUN_DIR alone: the run's opts.json is the config; a flag still overrides
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--max-steps", "4", "--threads", "1"]) == 0
    assert "resumed from" in capsys.readouterr().out
    st = torch.load(last, map_location="cpu", weights_only=False)
    assert st["global_step"] == 4
    assert json.loads((run / "opts.json").read_text())["max_steps"] == 4


def test_list_options_accept_a_bare_comma_list_and_one_value(tmp_path):
    cfg = resolve_config(None, ["encoder_widths=32,48,64,128", "encoder_units=[2, 2, 3, 2]"])
    assert (cfg.encoder_widths, cfg.encoder_units) == ([32, 48, 64, 128], [2, 2, 3, 2])
    with pytest.raises(E4EError, match="encoder_widths"):
        resolve_config(None, ["encoder_widths=32,x"])


def test_one_vocabulary_across_the_trainers(capsys):
    """e4e train's official names and train-generator's short names work in either trainer; each run
    records its own field names; flags are generated from the config dataclass (one home: cli.options)."""
    from e4e.train.classifier import ClassifierTrainConfig
    from e4e.train.config import aliases_of
    from e4e.train.stylegan import GANTrainConfig
    assert aliases_of(GANTrainConfig)["exp_dir"] == "out" and aliases_of(GANTrainConfig)["max_steps"] == "steps"
    assert aliases_of(E4ETrainConfig)["out"] == "exp_dir" and aliases_of(E4ETrainConfig)["generator"] == "stylegan_weights"
    assert "exp_dir" not in aliases_of(ClassifierTrainConfig)  # its out is a .safetensors path, not a folder
    g = build_config(GANTrainConfig, None, ["exp_dir=runs/a", "max_steps=9", "batch_size=8", "board_interval=3"])
    assert (g.out, g.steps, g.batch, g.log_every) == ("runs/a", 9, 8, 3)
    assert main(["train-generator", "--dry-run", "--data", "d", "--exp-dir", "runs/b", "--max_steps", "5",
                 "--compile", "off", "--resume"]) == 0
    got = yaml.safe_load(capsys.readouterr().out)
    assert (got["out"], got["steps"], got["compile"], got["resume"]) == ("runs/b", 5, "off", True)
    assert main(["train", "--dry-run", "--dataset_type", "avatar_encode", "--steps", "7", "--batch", "16"]) == 0
    got = yaml.safe_load(capsys.readouterr().out)
    assert (got["max_steps"], got["batch_size"]) == (7, 16)
    assert main(["train-classifier", "--dry-run", "--data", "d", "--out", "x.safetensors", "--attributes",
                 "smile,hat", "--half", "--batch_size", "32"]) == 0
    got = yaml.safe_load(capsys.readouterr().out)
    assert (got["attributes"], got["half"], got["batch"]) == (["smile", "hat"], True, 32)


def test_every_trainer_option_is_a_flag_with_its_help():
    import argparse
    import dataclasses
    from e4e.cli.options import add_config_flags
    from e4e.train.classifier import ClassifierTrainConfig
    from e4e.train.stylegan import GANTrainConfig
    for cls in (GANTrainConfig, ClassifierTrainConfig, E4ETrainConfig):
        p = argparse.ArgumentParser()
        add_config_flags(p, cls, "opts")
        text = p.format_help()
        for f in dataclasses.fields(cls):
            if f.type not in (dict, "dict"):
                assert f"--{f.name}" in text, (cls.__name__, f.name)
