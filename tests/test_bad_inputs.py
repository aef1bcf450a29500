"""Issue #22 regression tests: every bad input is one line on stderr and a non-zero exit (or a skip with a
reason where a batch goes on), and nothing outside the output folder is touched.

Each test reproduces one failing case of the audit through the command's `main([...])`, as a user meets it.
"""
import json
import re
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import e4e
from e4e.cli import main
from e4e.errors import E4EError
from e4e.latents import Latents, load_latents, merge_latents, read_index, save_latents
from test_outputs import unwritable_dir
from tiny_inverters import save_tiny


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny checkpoint, 2 images and their latents.npz."""
    root = tmp_path_factory.mktemp("bad")
    ckpt = save_tiny(root / "tiny.safetensors")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "imgs" / f"im{i}.png")
    inv = e4e.load(ckpt)
    save_latents(root / "latents.npz", e4e.invert([root / "imgs"], inv))
    return root, ckpt, inv


def one_line_error(capsys, rc, *needles):
    """The command failed with exit 2 and said why in exactly one stderr line, without a traceback."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("e4e: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def evil_latents(path, names, like):
    """A latents.npz as someone could share it: entry names chosen by its author."""
    arrays = {n: np.asarray(like[0]) for n in names}
    with zipfile.ZipFile(path, "w") as z:
        for n, a in arrays.items():
            with z.open(f"{n}.npy", "w") as f:
                np.lib.format.write_array(f, a)
        with z.open("__meta__.npy", "w") as f:
            np.lib.format.write_array(f, np.array(json.dumps(like[1])))
    return path


# -- 1. path traversal in `e4e edit` (serious) ----------------------------------------------------------

@pytest.mark.parametrize("name", ["../../../escaped", "/ABS/escaped", "sub/../../escaped"])
def test_edit_refuses_latent_names_that_leave_the_output_folder(world, tmp_path, capsys, name):
    root, ckpt, _ = world
    lat = load_latents(root / "latents.npz")
    name = name.replace("/ABS", str(tmp_path))
    evil = evil_latents(tmp_path / "evil.npz", ["ok", name], (lat.codes[0].numpy(), lat.meta))
    out = tmp_path / "deep" / "er" / "out"
    rc = main(["edit", str(evil), "-o", str(out), "--checkpoint", str(ckpt), "--sefa", "0", "--strength", "1", "-q"])
    one_line_error(capsys, rc, "not a safe output name")
    assert not list(tmp_path.rglob("escaped*"))  # nothing written anywhere
    assert not out.exists()  # refused while reading, before any output
    with pytest.raises(E4EError, match="not a safe output name"):
        read_index(evil)
    with pytest.raises(E4EError, match="not a safe output name"):
        merge_latents(tmp_path / "merged.npz", [evil], {})
    with pytest.raises(E4EError, match="not a safe output name"):
        Latents([name], torch.zeros(1, 8, 32))


def test_invert_of_odd_but_legal_file_names_gives_safe_names(world, tmp_path, capsys):
    root, ckpt, _ = world
    src = tmp_path / "in"
    src.mkdir()
    for name in ("we\\ird.png", "C:x.png"):  # legal on Linux, unsafe as output names elsewhere
        (src / name).write_bytes((root / "imgs" / "im0.png").read_bytes())
    out = tmp_path / "out"
    assert main(["invert", str(src), "--checkpoint", str(ckpt), "-o", str(out), "-q"]) == 0, capsys.readouterr().err
    assert sorted(load_latents(out / "latents.npz").names) == ["C_x", "we_ird"]
    assert main(["edit", str(out / "latents.npz"), "--checkpoint", str(ckpt), "-o", str(tmp_path / "e"),
                 "--sefa", "0", "--strength", "1", "-q"]) == 0
    assert (tmp_path / "e" / "original" / "we_ird.png").is_file()


def test_invert_names_outputs_inside_the_folder(world, tmp_path):
    from e4e.cli.invert import recon_path
    assert recon_path(tmp_path, "sub/a") == tmp_path / "recon" / "sub" / "a.png"
    with pytest.raises(E4EError):
        recon_path(tmp_path, "../a")


# -- 3. `e4e align` goes on after an unreadable image ---------------------------------------------------

class FixedFace:
    """A landmark detector that finds one face (5 points) in any image."""

    def __call__(self, image):
        w, h = image.size
        pts = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.38, 0.7], [0.62, 0.7]]) * [w, h]
        return [pts]


def test_align_skips_unreadable_images_and_aligns_the_rest(tmp_path, capsys, monkeypatch):
    import e4e.align
    monkeypatch.setattr(e4e.align, "load_detector", lambda backend, landmarks=None: FixedFace())
    src = tmp_path / "in"
    src.mkdir()
    (src / "a_broken.png").write_bytes(b"not an image")
    Image.new("RGB", (100, 100), "gray").save(src / "b_fine.png")
    out = tmp_path / "out"
    assert main(["align", str(src), "-o", str(out), "--size", "32"]) == 0
    cap = capsys.readouterr()
    assert "skipped" in cap.err and "a_broken.png" in cap.err and "Traceback" not in cap.err
    assert "1 unreadable, skipped" in cap.out
    assert sorted(p.name for p in out.iterdir()) == ["alignment.json", "b_fine.png"]  # alignment.json: h/flows
    assert main(["align", str(src / "a_broken.png"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "skipped" in err[0] and err[1].startswith("e4e: error: ") and "1 unreadable" in err[1]


# -- 6. output paths that cannot be written: one line, before the work ----------------------------------

def output_cases(root, ckpt):
    return {
        "invert": ["invert", str(root / "imgs"), "--checkpoint", str(ckpt), "-q", "-o"],
        "edit": ["edit", str(root / "latents.npz"), "--checkpoint", str(ckpt), "--sefa", "0", "--strength", "1",
                 "-q", "-o"],
        "generate": ["generate", "--checkpoint", str(ckpt), "--seeds", "0-1", "--device", "cpu", "-o"],
        "convert": ["convert", str(ckpt)],
    }


@pytest.mark.parametrize("command", ["invert", "edit", "generate", "convert"])
def test_output_that_is_a_file_or_unwritable_is_one_line(world, tmp_path, capsys, command):
    root, ckpt, _ = world
    args = output_cases(root, ckpt)[command]
    a_file = tmp_path / "taken"
    a_file.write_text("precious")
    if command == "convert":
        (tmp_path / "dir.safetensors").mkdir()
        one_line_error(capsys, main(args + [str(tmp_path / "dir.safetensors"), "--overwrite"]), "it is a folder")
        one_line_error(capsys, main(args + [str(a_file / "x.safetensors")]), "cannot write to")
        one_line_error(capsys, main(args + [str(unwritable_dir(tmp_path) / "x.safetensors")]), "cannot write to")
        return
    one_line_error(capsys, main(args + [str(a_file)]), "cannot write to", "it is a file")
    assert a_file.read_text() == "precious"
    one_line_error(capsys, main(args + [str(a_file / "sub")]), "cannot write to")
    one_line_error(capsys, main(args + [str(unwritable_dir(tmp_path) / "sub")]), "cannot write to")


def test_direction_and_eval_outputs_are_checked_first(world, tmp_path, capsys):
    root, ckpt, _ = world
    (tmp_path / "taken").write_text("x")
    for args in (["directions", "sefa", "--checkpoint", str(ckpt), "-o", str(tmp_path / "taken" / "d.pt")],
                 ["directions", "ganspace", "--checkpoint", str(ckpt), "-o", str(tmp_path)],
                 ["eval", str(root / "imgs"), "--checkpoint", str(ckpt), "--methods", "e4e", "-o",
                  str(tmp_path / "taken")]):
        one_line_error(capsys, main(args), "cannot write")


def test_unwritable_output_is_detected_before_the_work(world, tmp_path, capsys, monkeypatch):
    """The model is never loaded when -o cannot be written."""
    import e4e.api
    root, ckpt, _ = world
    monkeypatch.setattr(e4e.api, "load", lambda *a, **k: pytest.fail("loaded the model before checking -o"))
    (tmp_path / "taken").write_text("x")
    rc = main(["invert", str(root / "imgs"), "--checkpoint", str(ckpt), "-q", "-o", str(tmp_path / "taken")])
    one_line_error(capsys, rc, "cannot write to")


def test_oserror_escaping_a_command_is_one_line(capsys, monkeypatch):
    import e4e.cli.generate as gen

    def boom(args):
        raise PermissionError(13, "Permission denied", "/somewhere/grid.png")
    monkeypatch.setattr(gen, "run", boom)
    monkeypatch.setattr(gen, "register", lambda sub: sub.add_parser("generate").set_defaults(func=boom))
    one_line_error(capsys, main(["generate"]), "/somewhere/grid.png: Permission denied")


# -- 4, 6, 7. the e4e trainer: existing runs, bad options, bad checkpoints, log rows after a resume ------

from test_train_e4e import config as train_config  # noqa: E402
from test_train_e4e import tiny_world  # noqa: E402,F401  (fixture)


def train_yaml(world, exp, path, **kw):
    import dataclasses

    import yaml
    cfg = dataclasses.asdict(train_config(world, exp, **kw))
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}))
    return str(path)


def log_steps(exp):
    return [json.loads(line)["step"] for line in open(exp / "log.jsonl") if '"val"' not in line]


def test_e4e_train_refuses_to_restart_a_run_and_resume_keeps_the_log_clean(tiny_world, tmp_path, capsys):
    exp = tmp_path / "run"
    cfg2 = train_yaml(tiny_world, exp, tmp_path / "a.yaml", max_steps=2)
    assert main(["train", "--config", cfg2]) == 0
    capsys.readouterr()
    before = (exp / "checkpoints" / "last.pt").read_bytes()
    one_line_error(capsys, main(["train", "--config", cfg2]), "already holds a run", "--resume")
    assert (exp / "checkpoints" / "last.pt").read_bytes() == before  # nothing overwritten
    # a row logged after the last checkpoint (as when killed between the two): replayed steps must not repeat
    with open(exp / "log.jsonl", "a") as f:
        f.write(json.dumps({"loss": 1.0, "step": 3}) + "\n" + '{"loss": 0.5, "st')  # and a torn last line
    cfg4 = train_yaml(tiny_world, exp, tmp_path / "b.yaml", max_steps=4)
    assert main(["train", "--config", cfg4, "--resume"]) == 0
    assert log_steps(exp) == [1, 2, 3, 4]


@pytest.mark.parametrize("option", ["board_interval=0", "learning_rate=-1", "save_interval=-1", "val_interval=0",
                                     "image_interval=0", "test_batch_size=0", "l2_lambda=nan"])
def test_e4e_train_bad_option_values_are_one_line(tiny_world, tmp_path, capsys, option):
    cfg = train_yaml(tiny_world, tmp_path / "run", tmp_path / "c.yaml")
    one_line_error(capsys, main(["train", "--config", cfg, "--set", option]), option.split("=")[0])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", ["wrong_layout", "truncated", "wrong_model"])
def test_e4e_train_resume_from_a_bad_last_pt_is_one_line(tiny_world, tmp_path, capsys, content):
    exp = tmp_path / "run"
    cfg = train_yaml(tiny_world, exp, tmp_path / "c.yaml", max_steps=1)
    last = exp / "checkpoints" / "last.pt"
    if content == "wrong_model":  # a run of a deeper encoder
        assert main(["train", "--config", train_yaml(tiny_world, exp, tmp_path / "w.yaml", max_steps=1,
                                                     encoder_units=[1, 1, 2, 1])]) == 0
        capsys.readouterr()
        needle = "encoder: "
    else:
        last.parent.mkdir(parents=True)
        torch.save({"state_dict": {}, "something": 1} if content == "wrong_layout" else {"x": torch.zeros(1000)}, last)
        if content == "truncated":
            last.write_bytes(last.read_bytes()[:300])
        needle = "not a resumable checkpoint" if content == "wrong_layout" else "truncated"
    one_line_error(capsys, main(["train", "--config", cfg, "--resume"]), str(last), needle)


def test_bad_device_is_one_line(world, tiny_world, tmp_path, capsys):
    root, ckpt, _ = world
    for args in (["invert", str(root / "imgs"), "--checkpoint", str(ckpt), "-o", str(tmp_path / "i")],
                 ["generate", "--checkpoint", str(ckpt), "-o", str(tmp_path / "g")],
                 ["train", "--config", train_yaml(tiny_world, tmp_path / "t", tmp_path / "t.yaml")]):
        one_line_error(capsys, main(args + ["--device", "bogus"]), "bogus")


def test_training_into_an_unwritable_folder_is_one_line(tiny_world, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    cfg = train_yaml(tiny_world, tmp_path / "taken", tmp_path / "c.yaml")
    one_line_error(capsys, main(["train", "--config", cfg]), "cannot write to")
    one_line_error(capsys, main(["train-generator", "--data", str(tiny_world / "data"), "--out",
                                 str(tmp_path / "taken")]), "cannot write to")


@pytest.mark.parametrize("option", ["--batch=0", "--steps=0", "--size=-5", "save_every=0", "lr=-1", "log_every=0"])
def test_train_generator_bad_values_are_one_line(tmp_path, capsys, option):
    (tmp_path / "data").mkdir()
    args = ["train-generator", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    args += [option] if option.startswith("--") else ["--set", option]
    one_line_error(capsys, main(args), option.lstrip("-").split("=")[0])
    assert not (tmp_path / "run").exists()


# -- 6. crafted or truncated files ----------------------------------------------------------------------

def crafted_native(path, src, **meta_changes):
    """A copy of an e4e .safetensors file with its metadata entries replaced (None: removed)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    for k, v in meta_changes.items():
        meta.pop(k) if v is None else meta.__setitem__(k, v)
    save_file(load_file(str(src)), str(path), metadata=meta)
    return path


@pytest.mark.parametrize("change", [dict(parts=None), dict(parts="{not json"), dict(parts="5"), dict(parts="[1, 2]"),
                                    dict(configs="[]"), dict(configs='{"encoder": 3}'),
                                    dict(configs='{"encoder": {"bogus": 1}, "generator": {}}'), dict(info="[1]")])
def test_crafted_safetensors_metadata_is_one_line(world, tmp_path, capsys, change):
    root, ckpt, _ = world
    bad = crafted_native(tmp_path / "crafted.safetensors", ckpt, **change)
    one_line_error(capsys, main(["convert", str(bad)]), "crafted.safetensors", "metadata")
    one_line_error(capsys, main(["invert", str(root / "imgs"), "--checkpoint", str(bad), "-o", str(tmp_path / "o"),
                                 "-q"]), "crafted.safetensors", "metadata")


def test_truncated_checkpoints_say_truncated(world, tmp_path, capsys):
    from e4e.checkpoints import save_rosinality
    root, ckpt, inv = world
    save_rosinality(tmp_path / "g.pt", inv.decoder)
    data = (tmp_path / "g.pt").read_bytes()
    for i, cut in enumerate((len(data) // 3, len(data) - 30)):
        (tmp_path / f"cut{i}.pt").write_bytes(data[:cut])
        line = one_line_error(capsys, main(["generate", "--checkpoint", str(tmp_path / f"cut{i}.pt"), "-o",
                                            str(tmp_path / "g")]), "truncated")
        assert "Invalid argument" not in line


def test_a_checkpoint_given_as_latents_is_one_line(world, tmp_path, capsys):
    root, ckpt, _ = world
    # .pt is a latents format of its own (official latents.pt, h/flows): a torch file named .npz is the case
    torch.save({"w": torch.zeros(3)}, tmp_path / "not_latents.npz")  # a zip too, but of no .npy arrays
    rc = main(["edit", str(tmp_path / "not_latents.npz"), "-o", str(tmp_path / "e"), "--checkpoint", str(ckpt),
               "--sefa", "0", "--strength", "1", "-q"])
    one_line_error(capsys, rc, "not a latents .npz file")
    torch.save({"w": torch.zeros(3)}, tmp_path / "not_latents.pt")  # read as latents.pt: a 3-d code, refused
    rc = main(["edit", str(tmp_path / "not_latents.pt"), "-o", str(tmp_path / "e"), "--checkpoint", str(ckpt),
               "--sefa", "0", "--strength", "1", "-q"])
    one_line_error(capsys, rc, "another model")
    assert not (tmp_path / "e").exists()


def test_truncated_ganspace_npz_is_one_line(world, tmp_path, capsys):
    root, ckpt, _ = world
    pca = tmp_path / "pca.npz"
    np.savez(pca, lat_mean=np.zeros((1, 32)), lat_comp=np.eye(32)[:4, None], lat_stdev=np.ones(4))
    data = pca.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        pca.write_bytes(data[:cut])
        rc = main(["edit", str(root / "latents.npz"), "-o", str(tmp_path / "e"), "--checkpoint", str(ckpt),
                   "--ganspace", str(pca), "--edit", "0,0,2,1", "-q"])
        one_line_error(capsys, rc, "pca.npz")


# -- 6, 7. bad numbers: sizes, batch sizes, NaN ---------------------------------------------------------

def test_bad_sizes_and_batch_sizes_are_one_line(world, tmp_path, capsys):
    root, ckpt, _ = world
    inv_args = ["invert", str(root / "imgs"), "--checkpoint", str(ckpt), "-o", str(tmp_path / "i"), "-q"]
    edit_args = ["edit", str(root / "latents.npz"), "--checkpoint", str(ckpt), "--sefa", "0", "--strength", "1",
                 "-o", str(tmp_path / "e"), "-q"]
    gen_args = ["generate", "--checkpoint", str(ckpt), "-o", str(tmp_path / "g"), "--device", "cpu"]
    for args, needle in ((inv_args + ["--size", "-5"], "--size"), (edit_args + ["--size", "-5"], "--size"),
                         (["align", str(root / "imgs"), "-o", str(tmp_path / "a"), "--size", "-5"], "--size"),
                         (inv_args + ["--batch-size", "0"], "--batch-size"),
                         (edit_args + ["--batch-size", "0"], "--batch-size"),
                         (gen_args + ["--batch-size", "0"], "--batch-size")):
        one_line_error(capsys, main(args), needle)
    assert not any((tmp_path / d).exists() for d in "ieg")


def test_invert_with_only_bad_inputs_fails_and_writes_no_latents(world, tmp_path, capsys):
    root, ckpt, _ = world
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"nope")
    (tmp_path / "bad" / "b.jpg").write_bytes(b"\xff\xd8\xff broken")
    out = tmp_path / "out"
    assert main(["invert", str(tmp_path / "bad"), "--checkpoint", str(ckpt), "-o", str(out), "-q"]) == 2
    cap = capsys.readouterr()
    assert cap.out.count("skipped") == 2 and "Traceback" not in cap.err
    assert cap.err.startswith("e4e: error: none of the 2 input(s)") and len(cap.err.splitlines()) == 1
    assert not (out / "latents.npz").exists()


def test_nan_latents_and_strengths_are_refused(world, tmp_path, capsys):
    root, ckpt, inv = world
    lat = load_latents(root / "latents.npz")
    codes = lat.codes.clone()
    codes[1, 2, 3] = float("nan")
    save_latents(tmp_path / "nan.npz", Latents(lat.names, codes, lat.meta))
    base = ["--checkpoint", str(ckpt), "-o", str(tmp_path / "e"), "-q"]
    one_line_error(capsys, main(["edit", str(tmp_path / "nan.npz"), "--sefa", "0", "--strength", "1", *base]),
                   "NaN", lat.names[1])
    good = str(root / "latents.npz")
    one_line_error(capsys, main(["edit", good, "--sefa", "0", "--strength", "nan", *base]), "--strength")
    one_line_error(capsys, main(["edit", good, "--sefa", "0", "--sweep=nan:1:3", *base]), "--sweep")
    one_line_error(capsys, main(["edit", good, "--ganspace-fit", "50", "--edit", "0,0,2,inf", *base]), "finite")
    for bad in ("99,0,2,1", "0,5,2,1", "0,0,99,1"):  # out of range: refused before any image is written
        one_line_error(capsys, main(["edit", good, "--ganspace-fit", "50", "--edit", bad, *base]), "out of range")
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").rglob("*.png"))
    with pytest.raises(E4EError, match="finite"):
        e4e.edit(lat, direction=torch.ones(32), strength=float("nan"))


@pytest.mark.parametrize("images, kw, needle", [
    (torch.zeros(2, 32, 32), {}, "(B, 3, H, W)"),
    (torch.zeros(2, 1, 32, 32), {}, "(B, 3, H, W)"),
    (torch.zeros(0, 3, 32, 32), {}, "(B, 3, H, W)"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), {}, "float"),
    (torch.full((1, 3, 32, 32), float("nan")), {}, "NaN"),
    (torch.zeros(2, 3, 32, 32), {"batch_size": 0}, "batch_size"),
    (torch.zeros(2, 3, 32, 32), {"fit": "squash"}, "fit"),
])
def test_api_invert_bad_arguments_raise_e4e_error(world, images, kw, needle):
    _, _, inv = world
    with pytest.raises(E4EError, match=re.escape(needle)):
        e4e.invert(images, inv, **kw)


KILLED_RUN = """
import json, os, signal, sys
from e4e.train.e4e import E4ETrainConfig, E4ETrainer, train_e4e
cfg = E4ETrainConfig(**json.loads(sys.argv[1]))
loss = E4ETrainer.encoder_loss
def dying(self, *a, **k):  # kill -9 while computing step 6: rows of step 5 logged, last.pt at step 4
    if self.step == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return loss(self, *a, **k)
E4ETrainer.encoder_loss = dying
train_e4e(cfg, log=lambda *a: None)
"""


@pytest.mark.slow
def test_e4e_train_resumes_bit_identically_after_kill_9(tiny_world, tmp_path, capsys):
    import dataclasses
    import os
    import signal
    import subprocess
    import sys
    kw = dict(max_steps=7, save_interval=2, progressive_start=2, progressive_step_every=2, w_discriminator_lambda=0.1,
              use_w_pool=True, w_pool_size=3, d_reg_every=2)
    straight = tmp_path / "straight"
    assert main(["train", "--config", train_yaml(tiny_world, straight, tmp_path / "s.yaml", **kw)]) == 0
    killed = tmp_path / "killed"
    cfg = dataclasses.asdict(train_config(tiny_world, killed, **kw))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(cfg)], env=env, capture_output=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["global_step"] == 4
    assert log_steps(killed)[-1] == 5  # logged past the checkpoint before dying
    assert main(["train", "--config", train_yaml(tiny_world, killed, tmp_path / "k.yaml", **kw), "--resume"]) == 0
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    for part in ("state_dict", "discriminator_state_dict"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), (part, k)
    assert log_steps(killed) == log_steps(straight) == list(range(1, 8))
    rows = lambda exp: [json.loads(line) for line in open(exp / "log.jsonl")]  # noqa: E731
    strip = lambda r: {k: v for k, v in r.items() if k not in ("steps_per_s", "time_s")}  # noqa: E731
    assert [strip(r) for r in rows(killed)] == [strip(r) for r in rows(straight)]  # same losses, row for row
