"""NVIDIA stylegan2-ada-pytorch .pkl: restricted unpickling, conversion, parity with NVIDIA's outputs.

The pickles are made here without NVIDIA's code: a test-only `torch_utils.persistence` /
`dnnlib.util` pair (registered in sys.modules only while pickling) reproduces the persistent-class
protocol: each network pickles as `_reconstruct_persistent_obj(meta)` with meta = {type, version,
module_src, class_name, state=the module's __dict__}, as NVIDIA's persistence.py does.
"""
import math
import os
import pickle
import re
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import assert_parity, fixture_params, load_npz, manifest, need, rel_err, state_dict_from_manifest
from e4e.checkpoints.nvidia import (PersistentObject, convert_generator, load_nvidia_generator, load_nvidia_pkl,
                                    module_state_dict, read_pickle)
from e4e.checkpoints.rosinality import generator_from_state
from e4e.errors import E4EError

FILTER = (lambda k: k[:, None] * k[None, :] / 64)(torch.tensor([1.0, 3.0, 3.0, 1.0]))
BUFFERS = {"resample_filter", "noise_const", "w_avg"}


# -- a test-only copy of NVIDIA's pickling protocol --------------------------------------------------------

def _fake_nvidia_modules():
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # only its name is pickled; never called here
        raise AssertionError("the fake reconstruct hook must not run")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    torch_utils, dnnlib = types.ModuleType("torch_utils"), types.ModuleType("dnnlib")
    torch_utils.persistence, dnnlib.util, dnnlib.EasyDict = persistence, util, EasyDict
    return {"torch_utils": torch_utils, "torch_utils.persistence": persistence, "dnnlib": dnnlib, "dnnlib.util": util}


FAKE = _fake_nvidia_modules()
EasyDict = FAKE["dnnlib.util"].EasyDict


class NvModule(nn.Module):
    """A module that pickles as NVIDIA's persistent classes do: class name + module source + __dict__."""

    def __init__(self, class_name: str, module_src: str):
        super().__init__()
        self._nv = (class_name, module_src)

    def __reduce__(self):
        state = {k: v for k, v in self.__dict__.items() if k != "_nv"}
        meta = dict(type="class", version=6, module_src=self._nv[1], class_name=self._nv[0], state=state)
        return FAKE["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,)


def _class_for(name: str) -> str:
    for pattern, cls in ((r"mapping", "MappingNetwork"), (r"synthesis", "SynthesisNetwork"), (r"fc\d+|affine|embed",
                         "FullyConnectedLayer"), (r"b\d+", "SynthesisBlock"), (r"conv[01]", "SynthesisLayer"),
                         (r"torgb", "ToRGBLayer"), (r"input", "SynthesisInput"), (r"L\d+_\d+_\d+", "SynthesisLayer")):
        if re.fullmatch(pattern, name):
            return cls
    return "Module"


def nvidia_tree(sd: dict, init_kwargs: dict, module_src: str = "# NVIDIA networks.py\n") -> NvModule:
    """Rebuild NVIDIA's module nesting from a flat G_ema state dict (parameters vs buffers as NVIDIA has them)."""
    root = NvModule("Generator", module_src)
    for key, value in sd.items():
        *path, leaf = key.split(".")
        node = root
        for name in path:
            if name not in node._modules:
                child = NvModule(_class_for(name), module_src)
                if _class_for(name) == "FullyConnectedLayer":  # numpy scalars, as NVIDIA keeps them
                    child.weight_gain, child.bias_gain, child.activation = np.float64(0.01 / math.sqrt(512)), 0.01, "lrelu"
                node.add_module(name, child)
            node = node._modules[name]
        if leaf in BUFFERS:
            node.register_buffer(leaf, value.clone())
        else:
            node.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
    root._init_args = ()
    root._init_kwargs = EasyDict({k: EasyDict(v) if isinstance(v, dict) else v for k, v in init_kwargs.items()})
    root.z_dim = init_kwargs.get("z_dim")
    return root


def write_pkl(path, obj, protocol=4):
    saved = {k: sys.modules.get(k) for k in FAKE}
    sys.modules.update(FAKE)
    try:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return path


def snapshot(g_ema, **extra) -> dict:
    """The dict NVIDIA's training loop pickles."""
    return {"training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "resolution": 64},
            "G": g_ema, "D": None, "G_ema": g_ema, "augment_pipe": None, **extra}


def nvidia_layout(res, w_dim=512, n_map=8, channel_base=32768, channel_max=512) -> dict:
    """Key -> shape of NVIDIA's Generator.state_dict() (facts of training/networks.py)."""
    ch = {r: min(channel_base // r, channel_max) for r in [2 ** i for i in range(2, int(math.log2(res)) + 1)]}
    shapes = {}
    for r in ch:
        b = f"synthesis.b{r}"
        if r == 4:
            shapes[f"{b}.const"] = (ch[4], 4, 4)
        shapes[f"{b}.resample_filter"] = (4, 4)
        for conv, cin in ([("conv0", ch[r // 2])] if r > 4 else []) + [("conv1", ch[r])]:
            shapes.update({f"{b}.{conv}.weight": (ch[r], cin, 3, 3), f"{b}.{conv}.noise_strength": (),
                           f"{b}.{conv}.bias": (ch[r],), f"{b}.{conv}.resample_filter": (4, 4),
                           f"{b}.{conv}.noise_const": (r, r), f"{b}.{conv}.affine.weight": (cin, w_dim),
                           f"{b}.{conv}.affine.bias": (cin,)})
        shapes.update({f"{b}.torgb.weight": (3, ch[r], 1, 1), f"{b}.torgb.bias": (3,),
                       f"{b}.torgb.affine.weight": (ch[r], w_dim), f"{b}.torgb.affine.bias": (ch[r],)})
    shapes["mapping.w_avg"] = (w_dim,)
    for i in range(n_map):
        shapes.update({f"mapping.fc{i}.weight": (w_dim, w_dim), f"mapping.fc{i}.bias": (w_dim,)})
    return shapes


def random_nvidia_state(res, seed=0, **layout) -> dict:
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in nvidia_layout(res, **layout).items():
        if key.endswith("resample_filter"):
            sd[key] = FILTER.clone()
        elif key.endswith("affine.bias"):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith(("bias", "noise_strength")):
            sd[key] = 0.1 * torch.randn(shape, generator=gen)
        elif key.startswith("mapping.fc"):
            sd[key] = torch.randn(shape, generator=gen) * 100  # NVIDIA init: randn / lr_multiplier
        else:
            sd[key] = torch.randn(shape, generator=gen)
    return sd


def small_kwargs(**over) -> dict:
    kw = dict(z_dim=32, w_dim=32, c_dim=0, img_resolution=8, img_channels=3, mapping_kwargs={"num_layers": 2},
              synthesis_kwargs={"channel_base": 256, "channel_max": 32, "num_fp16_res": 0, "conv_clamp": None})
    kw.update(over)
    return kw


SMALL = dict(w_dim=32, n_map=2, channel_base=256, channel_max=32)


@pytest.fixture
def small_pkl(tmp_path):
    sd = random_nvidia_state(8, **SMALL)
    return write_pkl(tmp_path / "small.pkl", snapshot(nvidia_tree(sd, small_kwargs()))), sd


def nvidia_mapping(sd, z, n_map, lr=0.01):
    """NVIDIA's MappingNetwork forward, written from its definition (independent of our layers)."""
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in range(n_map):
        w, b = sd[f"mapping.fc{i}.weight"], sd[f"mapping.fc{i}.bias"]
        x = F.leaky_relu(x @ (w * (lr / math.sqrt(w.shape[1]))).t() + b * lr, 0.2) * math.sqrt(2)
    return x


# -- (a) unpickling an NVIDIA-style pickle ------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_pkl_state_dict_and_kwargs(small_pkl, protocol, tmp_path):
    path, sd = small_pkl
    if protocol != 4:
        path = write_pkl(tmp_path / f"p{protocol}.pkl", snapshot(nvidia_tree(sd, small_kwargs())), protocol)
    out = load_nvidia_pkl(path)
    assert set(out["G_ema"]) == set(sd)
    for k, v in sd.items():
        assert torch.equal(out["G_ema"][k], v), k
    assert out["init_kwargs"] == small_kwargs() and type(out["init_kwargs"]["mapping_kwargs"]) is dict
    assert {"Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer", "ToRGBLayer",
            "FullyConnectedLayer"} <= set(out["class_names"])
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


def test_persistent_objects_keep_source_as_text(tmp_path):
    src = "# networks.py\nclass Generator: pass\n"
    tree = nvidia_tree(random_nvidia_state(8, **SMALL), small_kwargs(), module_src=src)
    data = read_pickle(write_pkl(tmp_path / "g.pkl", snapshot(tree)))
    g = data["G_ema"]
    assert isinstance(g, PersistentObject) and g.class_name == "Generator" and g.module_src == src
    assert g.state["_modules"]["mapping"].state["_modules"]["fc0"].state["weight_gain"] == pytest.approx(0.01 / math.sqrt(512))
    assert data["G"] is g and data["training_set_kwargs"]["resolution"] == 64


def test_plain_torch_modules_inside_persistent_ones(tmp_path):
    """torch.nn classes pickle by class name + __setstate__; they are read as records, never imported."""
    d = NvModule("Discriminator", "# src\n")
    d.add_module("head", nn.Sequential(nn.Linear(4, 3), nn.LeakyReLU(0.2), nn.Linear(3, 1)))
    d.add_module("epilogue", NvModule("DiscriminatorEpilogue", "# src\n"))
    d.epilogue.register_buffer("scale", torch.ones(2))
    d.register_buffer("scratch", torch.zeros(5), persistent=False)
    d.gains = np.array([1.5, 2.0])
    data = read_pickle(write_pkl(tmp_path / "d.pkl", {"D": d}))
    got, want = module_state_dict(data["D"]), d.state_dict()
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert "scratch" not in got


# -- (b) parity with NVIDIA's own outputs ------------------------------------------------------------------------

# measured on 1 and 2 threads (docs/testing.md): up to 1.8e-6 for images, 6e-8 for codes
TOL = {"ws": 1e-6, "ws_trunc": 1e-6, "img": 5e-6, "img_trunc": 5e-6, "img_wplus": 5e-6}


@pytest.fixture(scope="module", params=fixture_params("ada"), ids=lambda f: getattr(f, "name", "missing"))
def ada(request, tmp_path_factory):
    fx = need(request.param)
    man = manifest(fx.manifest)
    cfg = man["config"]
    sd = state_dict_from_manifest(fx.manifest)
    kwargs = dict(z_dim=cfg["z_dim"], w_dim=cfg["w_dim"], c_dim=cfg["c_dim"], img_resolution=cfg["img_resolution"],
                  img_channels=3, mapping_kwargs={"num_layers": cfg["mapping_layers"]},
                  synthesis_kwargs={k: cfg[k] for k in ("channel_base", "channel_max", "num_fp16_res", "conv_clamp")})
    path = write_pkl(tmp_path_factory.mktemp("ada") / "network-snapshot.pkl", snapshot(nvidia_tree(sd, kwargs)))
    g, latent_avg = load_nvidia_generator(path)
    npz = load_npz(fx["npz"])
    return dict(cfg=cfg, sd=sd, g=g, latent_avg=latent_avg, npz=npz, man=man, name=fx.name)


def test_test_layout_matches_nvidia_manifest(ada):
    cfg = ada["cfg"]
    layout = nvidia_layout(cfg["img_resolution"], cfg["w_dim"], cfg["mapping_layers"], cfg["channel_base"],
                           cfg["channel_max"])
    assert layout == {k: tuple(v["shape"]) for k, v in ada["man"]["tensors"].items()}


def test_ada_mapping_and_truncation(ada):
    g, npz, cfg = ada["g"], ada["npz"], ada["cfg"]
    assert g.n_latent == cfg["num_ws"] and g.cfg.size == cfg["img_resolution"] and g.cfg.n_mlp == cfg["mapping_layers"]
    assert torch.equal(ada["latent_avg"][0], ada["sd"]["mapping.w_avg"])
    with torch.no_grad():
        w = g.mapping(npz["z"])[:, None].expand(-1, g.n_latent, -1)
        w_trunc = ada["latent_avg"] + 0.7 * (w - ada["latent_avg"])
    assert_parity(f"{ada['name']}.ws", w, npz["ws"], TOL["ws"])
    assert_parity(f"{ada['name']}.ws_trunc", w_trunc, npz["ws_trunc"], TOL["ws_trunc"])


def test_ada_image_first_sample(ada):
    with torch.no_grad():
        img, _ = ada["g"]([ada["npz"]["z"][:1]], randomize_noise=False)
    assert_parity(f"{ada['name']}.img[:1]", img, ada["npz"]["img"][:1], TOL["img"])


@pytest.mark.slow
@pytest.mark.parametrize("codes,expected", [("ws", "img"), ("ws_trunc", "img_trunc"), ("codes", "img_wplus")])
def test_ada_synthesis_parity(ada, codes, expected):
    with torch.no_grad():
        img = ada["g"].synthesis(ada["npz"][codes])
    assert_parity(f"{ada['name']}.{expected}", img, ada["npz"][expected], TOL[expected])


# -- (c) other presets convert and run ------------------------------------------------------------------------

def test_paper256_auto_preset_converts_and_runs():
    """2 mapping layers, channel_base 16384 (channel_multiplier 1): 'auto' below 512 px."""
    sd = random_nvidia_state(64, n_map=2, channel_base=16384)
    state, latent_avg, notes = convert_generator(sd, small_kwargs(z_dim=512, w_dim=512, img_resolution=64,
                                                                  synthesis_kwargs={"conv_clamp": 256}))
    g = generator_from_state(state)
    assert (g.cfg.size, g.cfg.n_mlp, g.cfg.channel_multiplier, g.cfg.channels(64)) == (64, 2, 1, 256)
    assert notes and "conv_clamp=256" in notes[0]
    z = torch.randn(2, 512)
    with torch.no_grad():
        assert rel_err(g.mapping(z), nvidia_mapping(sd, z, 2)) < 1e-5
        img, _ = g([z[:1]], randomize_noise=False)
    assert img.shape == (1, 3, 64, 64) and torch.isfinite(img).all()


def test_asymmetric_resample_filters_are_carried_unflipped():
    """NVIDIA's upfirdn2d, like rosinality's, applies its filter as a true convolution (flip_filter=False),
    so the converted blur/upsample kernels must be each block's own resample_filter, unflipped, times the
    up**2 = 4 gain NVIDIA applies at run time. The default [1,3,3,1] filter is symmetric and would hide a
    flip or a mix-up of blocks; here every block gets its own asymmetric filter."""
    sd = random_nvidia_state(16, **dict(SMALL, channel_base=1024))  # 32 channels at every resolution
    g = torch.Generator().manual_seed(5)
    filters = {}
    for k in sd:
        if k.endswith("resample_filter"):
            sd[k] = filters[k] = torch.rand(4, 4, generator=g) + 0.1
    synthesis = {"channel_base": 1024, "channel_max": 32, "num_fp16_res": 0, "conv_clamp": None}
    state, _, _ = convert_generator(sd, small_kwargs(img_resolution=16, synthesis_kwargs=synthesis))
    for j, res in enumerate((8, 16)):
        torch.testing.assert_close(state[f"convs.{2 * j}.conv.blur.kernel"],
                                   4 * filters[f"synthesis.b{res}.conv0.resample_filter"], rtol=0, atol=0)
        torch.testing.assert_close(state[f"to_rgbs.{j}.upsample.kernel"],
                                   4 * filters[f"synthesis.b{res}.resample_filter"], rtol=0, atol=0)
    g16 = generator_from_state(state)  # and the generator keeps them as loaded (persistent buffers)
    assert torch.equal(g16.convs[2].conv.blur.kernel, 4 * filters["synthesis.b16.conv0.resample_filter"])


def test_mapping_lr_multiplier_is_folded_into_weights():
    sd = random_nvidia_state(8, **SMALL)
    state, _, _ = convert_generator(sd, small_kwargs(mapping_kwargs={"num_layers": 2, "lr_multiplier": 0.05}))
    g = generator_from_state(state)
    z = torch.randn(3, 32)
    with torch.no_grad():
        assert rel_err(g.mapping(z), nvidia_mapping(sd, z, 2, lr=0.05)) < 1e-5


def test_small_pickle_end_to_end(small_pkl):
    path, sd = small_pkl
    g, latent_avg = load_nvidia_generator(path)
    assert g.cfg.size == 8 and g.cfg.channels(8) == 32 and torch.equal(latent_avg[0], sd["mapping.w_avg"])
    z = torch.randn(2, 32)
    with torch.no_grad():
        w = g.mapping(z)
        img, _ = g([z], randomize_noise=False)
    n_map = sum(1 for k in sd if k.startswith("mapping.fc") and k.endswith(".weight"))
    assert rel_err(w, nvidia_mapping(sd, z, n_map)) < 1e-6  # NVIDIA's mapping, written from its definition
    assert img.shape == (2, 3, 8, 8) and torch.isfinite(img).all() and img.std() > 0


# -- (d) security -------------------------------------------------------------------------------------------

class _Call:
    """Pickles as a call of `fn(*args)`: what a malicious pickle does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_embedded_source_is_never_executed(tmp_path):
    marker = tmp_path / "executed.txt"
    src = f"open({str(marker)!r}, 'w').write('pwned')\nclass Generator: pass\n"
    probe = tmp_path / "probe.txt"
    exec(src.replace(str(marker), str(probe)), {})  # the source really would write its file if run
    assert probe.exists()
    path = write_pkl(tmp_path / "evil_src.pkl", snapshot(nvidia_tree(random_nvidia_state(8, **SMALL), small_kwargs(),
                                                                     module_src=src)))
    g, _ = load_nvidia_generator(path)
    assert not marker.exists() and g.cfg.size == 8


@pytest.mark.parametrize("fn,arg", [(os.system, "touch {m}"), (eval, "open({m!r}, 'w')"), (exec, "open({m!r}, 'w')")])
def test_code_execution_is_refused(tmp_path, fn, arg):
    marker = tmp_path / "marker"
    payload = _Call(fn, arg.format(m=str(marker)))
    tree = nvidia_tree(random_nvidia_state(8, **SMALL), small_kwargs())
    tree.synthesis.b4.conv1.hook = payload  # buried deep inside a persistent object's state
    for i, obj in enumerate([payload, snapshot(tree)]):
        path = write_pkl(tmp_path / f"evil{i}.pkl", obj)
        with pytest.raises(E4EError, match=rf"refusing to load .*: the pickle asks for \w+\.{fn.__name__}$"):
            load_nvidia_generator(path)
    assert not marker.exists()


def test_malicious_tensor_bytes_are_refused(tmp_path):
    """torch's own _load_from_bytes would unpickle these bytes without restriction."""
    import torch.storage
    marker = tmp_path / "marker"
    path = write_pkl(tmp_path / "evil.pkl",
                     _Call(torch.storage._load_from_bytes, pickle.dumps(_Call(os.system, f"touch {marker}"))))
    with pytest.raises(E4EError, match="refusing to load .*embedded data"):
        load_nvidia_pkl(path)
    assert not marker.exists()


@pytest.mark.parametrize("qualname", ["training.networks.Generator", "torch_utils.persistence.persistent_class",
                                      "dnnlib.util.call_func_by_name", "builtins.getattr", "subprocess.Popen",
                                      "torch.load", "dnnlib.tflib.network.Network"])
def test_other_globals_are_refused_without_import(tmp_path, qualname):
    module, name = qualname.rsplit(".", 1)
    path = tmp_path / "g.pkl"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R.")
    with pytest.raises(E4EError, match=re.escape(f"asks for {qualname}")):
        load_nvidia_pkl(path)
    assert not any(m.split(".")[0] in ("training", "torch_utils", "dnnlib") for m in sys.modules)


# -- (e) unusable files: one line each -----------------------------------------------------------------------

def _one_line_error(path, pattern):
    with pytest.raises(E4EError, match=pattern) as info:
        load_nvidia_generator(path)
    assert "\n" not in str(info.value)


def test_truncated_and_foreign_files(small_pkl, tmp_path):
    data = small_pkl[0].read_bytes()
    for cut in (len(data) // 2, 40):
        (tmp_path / "cut.pkl").write_bytes(data[:cut])
        _one_line_error(tmp_path / "cut.pkl", "truncated or corrupt pickle")
    (tmp_path / "text.pkl").write_text("not a pickle at all\n")
    _one_line_error(tmp_path / "text.pkl", "not a pickle file")
    (tmp_path / "empty.pkl").write_bytes(b"")
    _one_line_error(tmp_path / "empty.pkl", "not a pickle file")
    torch.save({"g_ema": {}}, tmp_path / "zip.pkl")
    _one_line_error(tmp_path / "zip.pkl", "torch.save zip checkpoint")
    _one_line_error(tmp_path / "missing.pkl", "no such file")
    write_pkl(tmp_path / "d_only.pkl", {"D": NvModule("Discriminator", "")})
    _one_line_error(tmp_path / "d_only.pkl", "no 'G_ema' generator")


def test_conditional_generator_is_refused(tmp_path):
    sd = random_nvidia_state(8, **SMALL)
    sd.update({"mapping.embed.weight": torch.randn(32, 10), "mapping.embed.bias": torch.zeros(32)})
    path = write_pkl(tmp_path / "cond.pkl", snapshot(nvidia_tree(sd, small_kwargs(c_dim=10))))
    _one_line_error(path, r"conditional generator \(c_dim=10\)")


def test_stylegan3_is_refused(tmp_path):
    sd = {"mapping.fc0.weight": torch.randn(32, 32), "mapping.fc0.bias": torch.zeros(32),
          "mapping.w_avg": torch.zeros(32), "synthesis.input.weight": torch.randn(32, 4),
          "synthesis.input.affine.weight": torch.randn(4, 32), "synthesis.input.affine.bias": torch.zeros(4),
          "synthesis.L0_36_512.weight": torch.randn(32, 32, 3, 3), "synthesis.L0_36_512.affine.weight": torch.randn(32, 32)}
    path = write_pkl(tmp_path / "sg3.pkl", snapshot(nvidia_tree(sd, small_kwargs())))
    _one_line_error(path, "StyleGAN3 is not supported yet")


def test_unsupported_layouts_are_refused():
    sd = random_nvidia_state(8, **SMALL)
    with pytest.raises(E4EError, match="architecture 'resnet'"):
        convert_generator(sd, small_kwargs(synthesis_kwargs={"architecture": "resnet"}))
    rgba = dict(sd, **{"synthesis.b8.torgb.weight": torch.randn(4, 32, 1, 1)})
    with pytest.raises(E4EError, match="4 image channels"):
        convert_generator(rgba, small_kwargs())
    with pytest.raises(E4EError, match="unexpected key"):
        convert_generator(dict(sd, **{"synthesis.b8.extra.weight": torch.zeros(1)}), small_kwargs())
