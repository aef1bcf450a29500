"""e4e.checkpoints.convert and `e4e convert`: round trips between formats, latent_avg, one-line refusals."""
import pickle
import re

import pytest
import torch

from conftest import assert_parity, fixture_params, load_npz, manifest, need, state_dict_from_manifest
from e4e.checkpoints import load_generator, load_inverter, torch_load
from e4e.checkpoints.convert import MEAN_LATENT_N, convert, read_checkpoint
from e4e.cli import main
from e4e.errors import E4EError
from e4e.inverter import Inverter
from e4e.nets.encoders import EncoderConfig, build_encoder
from e4e.nets.stylegan2 import Generator, GeneratorConfig
from test_checkpoints_nvidia import (SMALL, nvidia_tree, random_nvidia_state, small_kwargs, snapshot,
                                     write_pkl)

D = 32


def randomized(module, seed=0):
    """Every float tensor of the state dict random (running_var positive), so a swapped or rescaled key shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, v in module.state_dict().items():
            if v.is_floating_point():
                v.copy_(torch.randn(v.shape, generator=gen))
                if key.endswith("running_var"):
                    v.abs_().add_(0.5)
    return module.eval()


def tiny_generator(size=16, seed=0, **kw):
    return randomized(Generator(GeneratorConfig(size=size, style_dim=D, n_mlp=2, channel_max=16, **kw)), seed)


def tiny_encoder(stylegan_size=16, kind="e4e", seed=1):
    cfg = EncoderConfig(kind=kind, stylegan_size=stylegan_size, style_dim=D, widths=(8, 16, 24, 32), units=(1, 1, 1, 1),
                        input_size=64, mode="ir")
    return randomized(build_encoder(cfg), seed)


def write_official(path, encoder, decoder, latent_avg=True, **extra):
    """The official on-disk layout: {'state_dict': encoder.*/decoder.*, 'opts', 'latent_avg', training state}."""
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    opts = {"encoder_type": "Encoder4Editing" if encoder.cfg.kind == "e4e" else "GradualStyleEncoder",
            "stylegan_size": encoder.cfg.stylegan_size, "start_from_latent_avg": latent_avg, "lpips_lambda": 0.8,
            "device": "cuda:0", "progressive_steps": [0, 2000, 4000], "checkpoint_path": None}
    ckpt = {"state_dict": state, "opts": opts, "global_step": 7, "best_val_loss": 0.25, **extra}
    if latent_avg:
        ckpt["latent_avg"] = torch.randn(encoder.n_styles, D, generator=torch.Generator().manual_seed(2))
    torch.save(ckpt, path)
    return ckpt


def assert_same_tensors(a: dict, b: dict):
    assert list(a) == list(b) or set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def cli(capsys, *argv):
    """-> (return code, stdout lines, stderr lines)."""
    rc = main(["convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err.splitlines()


def cli_error(capsys, *argv) -> str:
    rc, _, err = cli(capsys, *argv)
    assert rc == 2 and len(err) == 1, err
    return err[0]


# -- round trips ----------------------------------------------------------------------------------------------

def test_rosinality_to_safetensors_and_back_is_bit_exact(tmp_path, capsys):
    g, avg = tiny_generator(), torch.randn(D)
    torch.save({"g_ema": g.state_dict(), "latent_avg": avg, "d": {"w": torch.zeros(1)}, "args": {"lr": 0.002}},
               tmp_path / "g.pt")
    rc, out, err = cli(capsys, tmp_path / "g.pt", tmp_path / "g.safetensors")
    assert rc == 0 and not err
    text = "\n".join(out)
    assert "kind: generator" in text and "16px, n_styles 6, 2 mapping layers, style_dim 32" in text
    assert "channel_multiplier 2, channel_max 16" in text and "latent_avg: present, (1, 32)" in text
    assert "not converted: d, args" in text and "computed" not in text
    assert cli(capsys, tmp_path / "g.safetensors", tmp_path / "back.pt")[0] == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert_same_tensors(back["g_ema"], g.state_dict())
    assert torch.equal(back["latent_avg"], avg) and set(back) == {"g_ema", "latent_avg"}


def test_missing_latent_avg_is_computed_stored_and_said_once(tmp_path, capsys):
    g = tiny_generator()
    torch.save({"g_ema": g.state_dict()}, tmp_path / "g.pt")
    rc, out, err = cli(capsys, tmp_path / "g.pt", tmp_path / "g.safetensors")
    assert rc == 0 and not err
    said = [line for line in out if "computed" in line]
    assert len(said) == 1 and f"mapping(z) over {MEAN_LATENT_N} seeded z" in said[0]
    want = g.mean_latent(MEAN_LATENT_N, seed=0)
    ck = read_checkpoint(tmp_path / "g.safetensors", log=pytest.fail)  # stored: nothing left to compute
    assert torch.equal(ck.latent_avg, want)
    # describing only does not compute, and says when it would
    rc, out, _ = cli(capsys, tmp_path / "g.pt")
    assert rc == 0 and any("none in the file (computed when converting or loading" in line for line in out)
    assert not (tmp_path / "g2.pt").exists()


def test_load_generator_computes_latent_avg_on_request(tmp_path):
    g = tiny_generator()
    torch.save({"g_ema": g.state_dict()}, tmp_path / "g.pt")
    said = []
    g2, avg = load_generator(tmp_path / "g.pt", log=said.append)
    assert avg is None and not said  # the default leaves callers that do not need it fast
    g2, avg = load_generator(tmp_path / "g.pt", compute_latent_avg=True, log=said.append)
    assert torch.equal(avg, g.mean_latent(MEAN_LATENT_N, seed=0)) and avg.shape == (1, D)
    assert len(said) == 1 and "g.pt: no latent_avg in the file; computed it as the mean of mapping(z)" in said[0]
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.ones(D)}, tmp_path / "h.pt")
    _, avg = load_generator(tmp_path / "h.pt", compute_latent_avg=True, log=said.append)
    assert torch.equal(avg, torch.ones(1, D)) and len(said) == 1


@pytest.mark.parametrize("kind", ["e4e", "psp"])
def test_official_to_safetensors_and_back_is_bit_exact(tmp_path, capsys, kind):
    ckpt = write_official(tmp_path / "e4e.pt", tiny_encoder(kind=kind), tiny_generator())
    rc, out, err = cli(capsys, tmp_path / "e4e.pt", tmp_path / "e4e.safetensors")
    assert rc == 0 and not err
    text = "\n".join(out)
    name = "Encoder4Editing (e4e)" if kind == "e4e" else "GradualStyleEncoder (pSp)"
    assert "kind: inverter" in text and f"encoder: {name}, ir" in text and "stage widths 8/16/24/32" in text
    assert "6 styles of 32" in text and "latent_avg: present, (6, 32)" in text
    assert "opts: 7 training options" in text and "not converted: global_step, best_val_loss" in text
    assert cli(capsys, tmp_path / "e4e.safetensors", tmp_path / "back.pt")[0] == 0  # .pt + inverter -> official
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert_same_tensors(back["state_dict"], ckpt["state_dict"])
    assert torch.equal(back["latent_avg"], ckpt["latent_avg"]) and back["opts"] == ckpt["opts"]


def test_official_without_latent_avg_round_trips_without_one(tmp_path, capsys):
    ckpt = write_official(tmp_path / "e4e.pt", tiny_encoder(), tiny_generator(), latent_avg=False)
    rc, out, _ = cli(capsys, tmp_path / "e4e.pt", tmp_path / "e4e.safetensors")
    assert rc == 0 and any("latent_avg: none (start_from_latent_avg is off" in line for line in out)
    assert cli(capsys, tmp_path / "e4e.safetensors", tmp_path / "back.pt")[0] == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert "latent_avg" not in back and back["opts"]["start_from_latent_avg"] is False
    assert_same_tensors(back["state_dict"], ckpt["state_dict"])


def test_inverter_to_rosinality_writes_its_generator(tmp_path, capsys):
    enc, dec = tiny_encoder(), tiny_generator()
    mean = torch.randn(1, D)
    Inverter(enc, dec, mean).save(tmp_path / "inv.safetensors")
    rc, out, _ = cli(capsys, tmp_path / "inv.safetensors", tmp_path / "g.pt", "--to", "rosinality")
    assert rc == 0 and "wrote the generator only" in "\n".join(out) and out[-1].endswith("generator)")
    back = torch.load(tmp_path / "g.pt", weights_only=True)
    assert_same_tensors(back["g_ema"], dec.state_dict())
    assert torch.equal(back["latent_avg"], mean[0])
    # per-style rows are no generator mean: the written generator gets the seeded mean instead
    write_official(tmp_path / "e4e.pt", enc, dec)
    rc, out, _ = cli(capsys, tmp_path / "e4e.pt", tmp_path / "g2.pt", "--to", "rosinality")
    assert rc == 0 and any("differs per style" in line for line in out)
    assert torch.equal(torch.load(tmp_path / "g2.pt", weights_only=True)["latent_avg"],
                       dec.mean_latent(MEAN_LATENT_N, seed=0)[0])


def _images(g, n=2):
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return g([z], randomize_noise=False)[0]


def test_nvidia_pkl_to_safetensors_gives_the_same_images(tmp_path, capsys):
    sd = random_nvidia_state(8, **SMALL)
    write_pkl(tmp_path / "net.pkl", snapshot(nvidia_tree(sd, small_kwargs(synthesis_kwargs={"conv_clamp": 256}))))
    rc, out, err = cli(capsys, tmp_path / "net.pkl", tmp_path / "net.safetensors")
    assert rc == 0 and not err
    text = "\n".join(out)
    assert "format: NVIDIA stylegan2-ada-pytorch .pkl" in text and "8px, n_styles 4, 2 mapping layers" in text
    assert "note: conv_clamp=256" in text and "latent_avg: present, (1, 32)" in text
    g_pkl, avg_pkl = load_generator(tmp_path / "net.pkl")
    g_st, avg_st = load_generator(tmp_path / "net.safetensors")
    assert torch.equal(avg_pkl, avg_st) and torch.equal(avg_st[0], sd["mapping.w_avg"])
    assert torch.equal(_images(g_pkl), _images(g_st))
    # recognised by content: the same pickle under another name converts the same
    (tmp_path / "renamed.pt").write_bytes((tmp_path / "net.pkl").read_bytes())
    assert cli(capsys, tmp_path / "renamed.pt", tmp_path / "renamed.safetensors")[0] == 0
    assert torch.equal(_images(load_generator(tmp_path / "renamed.safetensors")[0]), _images(g_st))


@pytest.mark.slow
@pytest.mark.parametrize("fx", fixture_params("ada"))
def test_official_nvidia_fixture_via_safetensors(tmp_path, capsys, fx):
    fx = need(fx)
    man_path = fx.manifest
    cfg = manifest(man_path)["config"]
    kwargs = dict(z_dim=cfg["z_dim"], w_dim=cfg["w_dim"], c_dim=cfg["c_dim"], img_resolution=cfg["img_resolution"],
                  img_channels=3, mapping_kwargs={"num_layers": cfg["mapping_layers"]},
                  synthesis_kwargs={k: cfg[k] for k in ("channel_base", "channel_max", "num_fp16_res", "conv_clamp")})
    pkl = write_pkl(tmp_path / "snapshot.pkl", snapshot(nvidia_tree(state_dict_from_manifest(man_path), kwargs)))
    assert cli(capsys, pkl, tmp_path / "g.safetensors")[0] == 0
    g_pkl, _ = load_generator(pkl)
    g_st, avg = load_generator(tmp_path / "g.safetensors")
    npz = load_npz(fx["npz"])
    with torch.no_grad():
        img_pkl = g_pkl.synthesis(npz["ws"][:1])
        img_st = g_st.synthesis(npz["ws"][:1])
    assert torch.equal(img_pkl, img_st)
    assert_parity(f"{fx.name}.img[:1] via safetensors", img_st, npz["img"][:1], 5e-6)


@pytest.mark.slow
@pytest.mark.parametrize("fx", fixture_params("wrapper"))
def test_official_fixture_weights_round_trip(tmp_path, capsys, fx):
    """The official-size IR-SE50 encoder + StyleGAN2 decoder, official .pt -> safetensors -> official .pt."""
    fx = need(fx)
    enc_path, dec_path = fx.manifest, fx["decoder"]
    state = {f"encoder.{k}": v for k, v in state_dict_from_manifest(enc_path).items()}
    state.update({f"decoder.{k}": v for k, v in state_dict_from_manifest(dec_path).items()})
    n_styles = sum(1 for k in state if re.fullmatch(r"encoder\.styles\.\d+\.linear\.weight", k))
    ckpt = {"state_dict": state, "latent_avg": torch.randn(n_styles, state["decoder.style.1.weight"].shape[1]),
            "opts": {"encoder_type": "Encoder4Editing", "start_from_latent_avg": True,
                     "stylegan_size": 2 ** ((n_styles + 2) // 2)}}
    torch.save(ckpt, tmp_path / "e4e.pt")
    rc, out, _ = cli(capsys, tmp_path / "e4e.pt", tmp_path / "e4e.safetensors")
    assert rc == 0 and any("ir_se 50-layer body, stage widths 64/128/256/512" in line for line in out)
    assert cli(capsys, tmp_path / "e4e.safetensors", tmp_path / "back.pt")[0] == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert_same_tensors(back["state_dict"], state)
    assert torch.equal(back["latent_avg"], ckpt["latent_avg"])


# -- pairing an encoder with the wrong generator ---------------------------------------------------------------

PAIR_FIX = "pair the encoder with the generator it was trained with"


def test_official_checkpoint_with_a_replaced_decoder(tmp_path, capsys):
    write_official(tmp_path / "mixed.pt", tiny_encoder(stylegan_size=1024), tiny_generator(size=256))
    want = ("mixed.pt: the encoder predicts 18 styles (a 1024px generator) but its decoder (decoder.*) is 256px "
            f"(14 styles): {PAIR_FIX}")
    with pytest.raises(E4EError) as e:
        load_inverter(tmp_path / "mixed.pt")
    assert str(e.value) == want
    assert cli_error(capsys, tmp_path / "mixed.pt", tmp_path / "x.safetensors") == f"e4e: error: {want}"


def test_cli_generator_option_checks_the_pair(tmp_path, capsys):
    enc, dec = tiny_encoder(stylegan_size=16), tiny_generator(size=16)
    write_official(tmp_path / "e4e.pt", enc, dec)
    torch.save({"g_ema": tiny_generator(size=256).state_dict()}, tmp_path / "g256.pt")
    msg = cli_error(capsys, tmp_path / "e4e.pt", tmp_path / "x.pt", "--generator", tmp_path / "g256.pt")
    assert msg == ("e4e: error: e4e.pt: the encoder predicts 6 styles (a 16px generator) but --generator g256.pt is "
                   f"256px (14 styles): {PAIR_FIX}")
    other = tiny_generator(size=16, seed=9)
    torch.save({"g_ema": other.state_dict()}, tmp_path / "g16.pt")
    rc, out, _ = cli(capsys, tmp_path / "e4e.pt", tmp_path / "new.pt", "--generator", tmp_path / "g16.pt")
    assert rc == 0 and any("decoder replaced by g16.pt" in line for line in out)
    inv = load_inverter(tmp_path / "new.pt")
    assert_same_tensors(inv.decoder.state_dict(), other.state_dict())
    assert_same_tensors(inv.encoder.state_dict(), enc.state_dict())
    msg = cli_error(capsys, tmp_path / "g16.pt", tmp_path / "y.pt", "--generator", tmp_path / "g16.pt")
    assert "g16.pt: a generator, not an inverter: --generator replaces the decoder" in msg


def test_inverter_api_mismatch_is_actionable():
    with pytest.raises(E4EError) as e:
        Inverter(tiny_encoder(stylegan_size=1024), tiny_generator(size=256))
    msg = str(e.value)
    assert "\n" not in msg and "18 styles" in msg and "14" in msg and "256px" in msg and "use the encoder" in msg


def test_native_inverter_with_mismatched_configs(tmp_path):
    from dataclasses import asdict

    from e4e.checkpoints import save_native
    enc, dec = tiny_encoder(stylegan_size=1024), tiny_generator(size=256)
    save_native(tmp_path / "bad.safetensors", {"encoder": enc.state_dict(), "generator": dec.state_dict()},
                {"encoder": asdict(enc.cfg), "generator": asdict(dec.cfg)})
    with pytest.raises(E4EError, match=r"^bad.safetensors: the encoder predicts 18 styles .* its generator is 256px "
                                       r"\(14 styles\): pair the encoder"):
        load_inverter(tmp_path / "bad.safetensors")


# -- unusable inputs and impossible outputs: one line, exit code 2 -------------------------------------------------

def test_unsupported_nvidia_pickles(tmp_path, capsys):
    sd = random_nvidia_state(8, **SMALL)
    sd.update({"mapping.embed.weight": torch.randn(32, 10), "mapping.embed.bias": torch.zeros(32)})
    write_pkl(tmp_path / "cond.pkl", snapshot(nvidia_tree(sd, small_kwargs(c_dim=10))))
    assert cli_error(capsys, tmp_path / "cond.pkl", tmp_path / "o.safetensors") == (
        "e4e: error: cond.pkl:G_ema: a conditional generator (c_dim=10); only unconditional StyleGAN2 generators "
        "(c_dim=0) can be used")
    sg3 = {"mapping.fc0.weight": torch.randn(32, 32), "mapping.fc0.bias": torch.zeros(32),
           "mapping.w_avg": torch.zeros(32), "synthesis.input.weight": torch.randn(32, 4),
           "synthesis.L0_36_512.weight": torch.randn(32, 32, 3, 3)}
    write_pkl(tmp_path / "sg3.pkl", snapshot(nvidia_tree(sg3, small_kwargs())))
    assert cli_error(capsys, tmp_path / "sg3.pkl", tmp_path / "o.safetensors") == (
        "e4e: error: sg3.pkl:G_ema: a StyleGAN3 generator; StyleGAN3 is not supported yet")


def test_broken_inputs(tmp_path, capsys):
    data = write_pkl(tmp_path / "ok.pkl", snapshot(nvidia_tree(random_nvidia_state(8, **SMALL), small_kwargs())))
    (tmp_path / "cut.pkl").write_bytes(data.read_bytes()[:len(data.read_bytes()) // 2])
    assert "cut.pkl: truncated or corrupt pickle (" in cli_error(capsys, tmp_path / "cut.pkl")
    (tmp_path / "text.pkl").write_text("hello\n")
    assert cli_error(capsys, tmp_path / "text.pkl").endswith(
        "text.pkl: not a pickle file (an NVIDIA stylegan2-ada-pytorch .pkl was expected)")
    (tmp_path / "text.pt").write_text("hello\n")
    assert "text.pt: not a PyTorch checkpoint" in cli_error(capsys, tmp_path / "text.pt")
    torch.save({"g_ema": tiny_generator().state_dict()}, tmp_path / "g.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "g.pt").read_bytes()[:3000])
    assert "cut.pt: truncated or corrupt checkpoint" in cli_error(capsys, tmp_path / "cut.pt")
    assert cli_error(capsys, tmp_path / "missing.pt").endswith("missing.pt: no such file")


def test_impossible_outputs(tmp_path, capsys):
    torch.save({"g_ema": tiny_generator().state_dict()}, tmp_path / "g.pt")
    g = tmp_path / "g.pt"
    assert cli_error(capsys, g, tmp_path / "o.pt", "--to", "official").endswith(
        "g.pt: a generator only (no encoder); the official e4e/pSp format holds an encoder and its decoder: "
        "write an e4e .safetensors or a rosinality .pt file instead")
    assert cli_error(capsys, g, tmp_path / "o.pkl").endswith(
        "o.pkl: writing NVIDIA .pkl files is not supported; write a rosinality .pt or an e4e .safetensors file instead")
    assert cli_error(capsys, g, tmp_path / "o.bin").endswith(
        "o.bin: cannot tell the output format from the name; use a .safetensors or .pt name, "
        "or --to {rosinality,official,safetensors}")
    assert cli_error(capsys, g, tmp_path / "o.pt", "--to", "safetensors").endswith(
        "o.pt: the name does not match --to safetensors; name it o.safetensors")
    assert cli_error(capsys, g, g).endswith("g.pt: is the input file; write to another path")
    (tmp_path / "taken.safetensors").write_bytes(b"x")
    assert cli_error(capsys, g, tmp_path / "taken.safetensors").endswith(
        "taken.safetensors: exists; pass --overwrite to replace it")
    assert cli(capsys, g, tmp_path / "taken.safetensors", "--overwrite")[0] == 0
    assert not list(tmp_path.glob("o.*"))


def test_torch_load_messages_say_what_the_file_is(tmp_path):
    import argparse
    write_pkl(tmp_path / "nv.pt", snapshot(nvidia_tree(random_nvidia_state(8, **SMALL), small_kwargs())))
    with pytest.raises(E4EError) as e:
        torch_load(tmp_path / "nv.pt")
    assert "nv.pt: a plain Python pickle, not a torch.save checkpoint" in str(e.value) and "e4e convert" in str(e.value)
    with pytest.raises(E4EError, match="nv.pt: a pickle .*not an inverter"):
        load_inverter(tmp_path / "nv.pt")
    torch.save({"g_ema": {}, "args": argparse.Namespace(lr=1)}, tmp_path / "ns.pt")
    with pytest.raises(E4EError) as e:
        torch_load(tmp_path / "ns.pt")
    assert str(e.value).startswith(f"{tmp_path / 'ns.pt'}: refusing to unpickle argparse.Namespace: ")
    with open(tmp_path / "plain.pkl", "wb") as f:  # a pickle with no G_ema
        pickle.dump({"x": 1}, f)
    with pytest.raises(E4EError, match="no 'G_ema' generator"):
        convert(tmp_path / "plain.pkl")


def test_legacy_torch_format_is_read_as_torch(tmp_path, capsys):
    g = tiny_generator()
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(D)}, tmp_path / "old.pt",
               _use_new_zipfile_serialization=False)
    assert cli(capsys, tmp_path / "old.pt", tmp_path / "new.safetensors")[0] == 0
    assert_same_tensors(read_checkpoint(tmp_path / "new.safetensors").generator.state_dict(), g.state_dict())
    torch.save({"g_ema": g.state_dict()}, tmp_path / "p4.pt", _use_new_zipfile_serialization=False, pickle_protocol=4)
    with pytest.warns(UserWarning, match="protocol 4"):  # torch's own notice
        assert "p4.pt: uses pickle opcodes torch.load(weights_only=True) cannot read" in cli_error(capsys, tmp_path / "p4.pt")
