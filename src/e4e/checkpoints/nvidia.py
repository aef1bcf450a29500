"""NVIDIA stylegan2-ada-pytorch generator pickles (.pkl), read without running the code they carry.

NVIDIA's networks are "persistent classes": every pickled module is a call to
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, where meta = {type, version, module_src,
class_name, state} holds the full Python source of the module that defined the class and the
module's `__dict__`. NVIDIA's own loader exec()s that source, so opening a downloaded .pkl with it can
run anything. Here a restricted unpickler resolves only a fixed set of names: the reconstruct hook
becomes a record of `meta` (the source stays text), tensors are rebuilt through torch's weights-only
loader, and the state dict is read from the nested `_parameters` / `_buffers` / `_modules` dicts.
Every other global (os.system, builtins.eval, NVIDIA's own modules...) is refused.

`convert_generator` then maps `G_ema` onto our rosinality-layout Generator. The two compute the same
function: see the notes on each mapping below.
"""
import io
import pickle
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from e4e.errors import E4EError

ROSINALITY_LR_MLP = 0.01  # our Generator's mapping lr multiplier (GeneratorConfig.lr_mlp default)


class _Refused(Exception):
    """Raised inside the unpickler; the loader turns it into an E4EError naming the file."""


# -- stand-ins for the names a generator pickle uses ---------------------------------------------------

class PersistentObject:
    """What `_reconstruct_persistent_obj(meta)` would have rebuilt, kept as data: `module_src` is never run."""
    __slots__ = ("class_name", "module_src", "version", "state")

    def __init__(self, class_name: str, module_src: str, version, state: dict):
        self.class_name, self.module_src, self.version, self.state = class_name, module_src, version, state

    def __repr__(self):
        return f"PersistentObject({self.class_name!r}, {len(self.module_src)} chars of source not executed)"


def _reconstruct_persistent_obj(meta):
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise _Refused("a persistent object with unexpected metadata")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise _Refused("a persistent object whose state is not a dict")
    return PersistentObject(str(meta.get("class_name")), str(meta.get("module_src", "")), meta.get("version"), state)


class TorchModuleStub:
    """A pickled torch.nn module (copyreg NEWOBJ + BUILD): records its __dict__ instead of importing the class."""
    type_name = "torch.nn.Module"

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise _Refused(f"{self.type_name} with a non-dict state")
        self.state = state


_STUBS: dict[str, type] = {}


def _torch_module_stub(qualname: str) -> type:
    if qualname not in _STUBS:
        _STUBS[qualname] = type(qualname.rsplit(".", 1)[1], (TorchModuleStub,), {"type_name": qualname})
    return _STUBS[qualname]


class EasyDictStub(dict):
    """dnnlib's EasyDict is a dict with attribute access; a plain dict subclass holds the same data."""


def _load_storage(data):
    # torch pickles a storage as _load_from_bytes(torch.save bytes); torch's own _load_from_bytes reads
    # those bytes with weights_only=False, i.e. as a second unrestricted pickle. Read them weights-only.
    if not isinstance(data, (bytes, bytearray)):
        raise _Refused("a tensor storage that is not bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage deprecation notice
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception:
        raise _Refused("a tensor storage whose embedded data is not plain tensor data") from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise _Refused("a tensor storage that does not hold a storage")
    return storage


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise _Refused("a tensor without a storage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._utils._rebuild_tensor_v2(storage, int(storage_offset), tuple(size), tuple(stride), False,
                                               OrderedDict())


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise _Refused("a parameter that is not a tensor")
    return data  # only the values matter here


def _numpy_scalar(dtype, data=None):
    # NVIDIA modules keep numpy floats (weight_gain = lr / np.sqrt(n)) in their __dict__.
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Refused("a numpy scalar that is not plain numeric data")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


class NumpyArrayStub:
    """numpy's `_reconstruct` + BUILD, accepting numeric raw bytes only (never object arrays)."""

    def __setstate__(self, state):
        try:
            _, shape, dtype, fortran, raw = state
        except (TypeError, ValueError):
            raise _Refused("a numpy array with an unexpected state") from None
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(raw, bytes):
            raise _Refused("a numpy array that is not plain numeric data")
        self.array = np.frombuffer(raw, dtype=dtype).reshape(tuple(shape), order="F" if fortran else "C").copy()


def _numpy_reconstruct(subtype, shape, dtype):
    return NumpyArrayStub()


_ALLOWED = {
    # tensors, exactly as a plain pickle of torch tensors / parameters spells them
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.storage._load_from_bytes": _load_storage,
    # NVIDIA's container protocol, recognised by name and replaced
    "torch_utils.persistence._reconstruct_persistent_obj": _reconstruct_persistent_obj,
    "dnnlib.EasyDict": EasyDictStub,
    "dnnlib.util.EasyDict": EasyDictStub,
    # plain data
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.bytearray": bytearray,
    "numpy.dtype": np.dtype,
    "numpy.ndarray": np.ndarray,
}
for _np in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[f"{_np}.scalar"] = _numpy_scalar
    _ALLOWED[f"{_np}._reconstruct"] = _numpy_reconstruct


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        qualname = f"{module}.{name}"
        if qualname in _ALLOWED:
            return _ALLOWED[qualname]
        if module.startswith("torch.nn.modules.") and name.isidentifier():
            return _torch_module_stub(qualname)
        raise _Refused(f"the pickle asks for {qualname}")

    def persistent_load(self, pid):
        raise _Refused("the pickle uses persistent ids (not a plain pickle)")


# -- reading ------------------------------------------------------------------------------------------------

def read_pickle(path) -> object:
    """Unpickle `path` with the restricted unpickler; NVIDIA networks come back as PersistentObject."""
    path = Path(path)
    if not path.is_file():
        raise E4EError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
        if head[:1] != b"\x80":
            if head.startswith(b"PK\x03\x04"):
                raise E4EError(f"{path}: is a torch.save zip checkpoint, not an NVIDIA .pkl (load it as a .pt file)")
            raise E4EError(f"{path}: not a pickle file (an NVIDIA stylegan2-ada-pytorch .pkl was expected)")
        f.seek(0)
        try:
            return _RestrictedUnpickler(f).load()
        except _Refused as e:
            hint = ""
            if "tflib" in str(e):
                hint = " (a TensorFlow StyleGAN pickle: only stylegan2-ada-pytorch pickles are supported)"
            raise E4EError(f"refusing to load {path}: {e}{hint}") from None
        except RecursionError:
            raise E4EError(f"{path}: pickle nested too deeply") from None
        except Exception as e:  # truncated or corrupt bytes raise EOFError, UnpicklingError, ValueError...
            msg = " ".join(str(e).split()) or type(e).__name__
            raise E4EError(f"{path}: truncated or corrupt pickle ({msg})") from None


def _module_state(obj, where: str) -> dict:
    if isinstance(obj, PersistentObject):
        return obj.state
    if isinstance(obj, TorchModuleStub):
        return getattr(obj, "state", {})
    raise E4EError(f"'{where}' is a {type(obj).__name__}, not a network module")


def module_state_dict(obj, where: str = "module") -> dict:
    """state_dict() of a pickled module tree: parameters, persistent buffers, then submodules, recursively."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(node, prefix):
        if id(node) in seen:
            raise E4EError(f"'{where}': module tree contains a cycle at '{prefix or '<root>'}'")
        seen.add(id(node))
        state = _module_state(node, where + ("." + prefix.rstrip(".") if prefix else ""))
        non_persistent = state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, value in (state.get(group) or {}).items():
                if value is None or (group == "_buffers" and name in non_persistent):
                    continue
                if not isinstance(value, torch.Tensor):
                    raise E4EError(f"'{where}': {prefix}{name} is a {type(value).__name__}, not a tensor")
                out[prefix + name] = value
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}{name}.")
        seen.discard(id(node))

    walk(obj, "")
    return out


def _class_names(obj) -> set[str]:
    names: set[str] = set()
    seen: set[int] = set()
    stack = [obj]
    while stack:
        node = stack.pop()
        if id(node) in seen or not isinstance(node, (PersistentObject, TorchModuleStub)):
            continue
        seen.add(id(node))
        if isinstance(node, PersistentObject):
            names.add(node.class_name)
        stack.extend((_module_state(node, "").get("_modules") or {}).values())
    return names


def _plain(value):
    """init_kwargs as plain Python data (EasyDicts -> dicts, numpy scalars -> numbers)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, NumpyArrayStub):
        return value.array.tolist()
    return value


def load_nvidia_pkl(path) -> dict:
    """-> {'G_ema': state dict with NVIDIA's keys, 'init_kwargs': the constructor kwargs ({} if absent),
    'class_names': names of the persistent classes in G_ema}. Never executes the pickle's source code."""
    path = Path(path)
    data = read_pickle(path)
    if isinstance(data, PersistentObject):  # a bare pickled generator
        data = {"G_ema": data}
    if not isinstance(data, dict) or "G_ema" not in data:
        keys = ", ".join(map(str, list(data)[:6])) if isinstance(data, dict) else type(data).__name__
        raise E4EError(f"{path}: no 'G_ema' generator in the pickle (found: {keys})")
    g = data["G_ema"]
    if not isinstance(g, (PersistentObject, TorchModuleStub)):
        raise E4EError(f"{path}: 'G_ema' is a {type(g).__name__}, not a network")
    init_kwargs = _module_state(g, "G_ema").get("_init_kwargs")
    return {
        "G_ema": module_state_dict(g, "G_ema"),
        "init_kwargs": _plain(init_kwargs) if isinstance(init_kwargs, dict) else {},
        "class_names": sorted(_class_names(g)),
    }


# -- conversion to our rosinality layout ----------------------------------------------------------------------

def _check_supported(sd: dict, kwargs: dict, class_names, where: str) -> None:
    if ("SynthesisInput" in class_names or any(k.startswith("synthesis.input.") for k in sd)
            or any(re.match(r"synthesis\.L\d+_\d+_\d+\.", k) for k in sd)):
        raise E4EError(f"{where}: a StyleGAN3 generator; StyleGAN3 is not supported yet")
    c_dim = kwargs.get("c_dim") or 0
    if c_dim or "mapping.embed.weight" in sd:
        raise E4EError(f"{where}: a conditional generator (c_dim={c_dim or '>0'}); only unconditional "
                       "StyleGAN2 generators (c_dim=0) can be used")
    if "synthesis.b4.const" not in sd or "mapping.fc0.weight" not in sd:
        raise E4EError(f"{where}: not a StyleGAN2-ADA generator (no synthesis.b4.const / mapping.fc0.weight)")
    arch = (kwargs.get("synthesis_kwargs") or {}).get("architecture", "skip")
    if arch != "skip" or any(re.match(r"synthesis\.b\d+\.skip\.", k) for k in sd):
        raise E4EError(f"{where}: synthesis architecture {arch!r} is not supported (only NVIDIA's default 'skip')")


def convert_generator(sd: dict, init_kwargs: dict | None = None, class_names=(), where: str = "G_ema"):
    """NVIDIA G_ema state dict -> (rosinality-layout state dict, latent_avg (1, w_dim) or None, notes).

    The function is the same term by term:
    - mapping: NVIDIA and rosinality both scale weights by lr / sqrt(fan_in) and biases by lr at run time;
      weights are rescaled by lr_nvidia / 0.01 so our fixed lr_mlp reproduces them (a no-op for 0.01).
    - modulated convs: NVIDIA applies no weight gain (demodulation cancels it) where rosinality multiplies
      by 1/sqrt(fan_in); weights are copied unchanged, so the only difference is the demodulation epsilon
      (1e-8 added to a sum that rosinality computes fan_in times smaller): negligible.
    - ToRGB: NVIDIA multiplies the styles by 1/sqrt(fan_in), rosinality the weight: identical.
    - conv0 (up): both run a stride-2 transposed conv with the unflipped weight then the FIR filter times 4
      with padding (1, 1); the skip upsampler: filter times 4, up 2, padding (2, 1). So the kernel buffers are
      NVIDIA's resample_filter * 4 (up**2, the gain NVIDIA applies at run time).
    - noise: noise_const * noise_strength added before bias + lrelu * sqrt(2), as rosinality does.
    """
    kwargs = init_kwargs or {}
    _check_supported(sd, kwargs, class_names, where)
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []

    def take(key):
        if key not in sd:
            raise E4EError(f"{where}: missing key '{key}'")
        used.add(key)
        return sd[key].detach().to(torch.float32).contiguous().clone()

    # mapping
    lr = float((kwargs.get("mapping_kwargs") or {}).get("lr_multiplier", 0.01))
    gain = lr / ROSINALITY_LR_MLP
    n_mlp = len([k for k in sd if re.fullmatch(r"mapping\.fc\d+\.weight", k)])
    for i in range(n_mlp):
        out[f"style.{i + 1}.weight"] = take(f"mapping.fc{i}.weight") * gain
        out[f"style.{i + 1}.bias"] = take(f"mapping.fc{i}.bias") * gain
    z_dim, w_dim = out["style.1.weight"].shape[1], out[f"style.{n_mlp}.weight"].shape[0]
    if z_dim != w_dim or any(out[f"style.{i + 1}.weight"].shape != (w_dim, w_dim) for i in range(n_mlp)):
        raise E4EError(f"{where}: mapping widths differ from w_dim={w_dim} (z_dim={z_dim}); our generator "
                       "needs z_dim = w_dim = layer width")
    latent_avg = take("mapping.w_avg").reshape(1, -1) if "mapping.w_avg" in sd else None

    def kernel(key):
        f = take(key)
        if f.shape != (4, 4):
            raise E4EError(f"{where}: resample filter '{key}' has shape {tuple(f.shape)}; only 4-tap "
                           "filters ([1,3,3,1], NVIDIA's default) are supported")
        return f * 4  # NVIDIA applies gain up**2 = 4 at run time; rosinality stores it in the kernel

    def layer(src, dst, noise_idx, res, up=False):
        out[f"{dst}.conv.weight"] = take(f"{src}.weight")[None]
        out[f"{dst}.conv.modulation.weight"] = take(f"{src}.affine.weight")
        out[f"{dst}.conv.modulation.bias"] = take(f"{src}.affine.bias")
        out[f"{dst}.activate.bias"] = take(f"{src}.bias")
        if f"{src}.noise_strength" in sd:
            out[f"{dst}.noise.weight"] = take(f"{src}.noise_strength").reshape(1)
            out[f"noises.noise_{noise_idx}"] = take(f"{src}.noise_const")[None, None]
        else:  # use_noise=False: a zero noise strength is the same function
            out[f"{dst}.noise.weight"] = torch.zeros(1)
            out[f"noises.noise_{noise_idx}"] = torch.zeros(1, 1, res, res)
        if up:
            out[f"{dst}.conv.blur.kernel"] = kernel(f"{src}.resample_filter")
        elif f"{src}.resample_filter" in sd:
            used.add(f"{src}.resample_filter")  # unused by NVIDIA too (no resampling)

    def torgb(src, dst):
        w = take(f"{src}.weight")
        if w.shape[0] != 3 or w.shape[2:] != (1, 1):
            raise E4EError(f"{where}: {w.shape[0]} image channels; only RGB generators are supported")
        out[f"{dst}.conv.weight"] = w[None]
        out[f"{dst}.conv.modulation.weight"] = take(f"{src}.affine.weight")
        out[f"{dst}.conv.modulation.bias"] = take(f"{src}.affine.bias")
        out[f"{dst}.bias"] = take(f"{src}.bias").reshape(1, -1, 1, 1)

    resolutions = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if resolutions != [2 ** i for i in range(2, 2 + len(resolutions))]:
        raise E4EError(f"{where}: synthesis blocks {resolutions} are not 4, 8, ..., size")
    out["input.input"] = take("synthesis.b4.const")[None]
    layer("synthesis.b4.conv1", "conv1", 0, 4)
    torgb("synthesis.b4.torgb", "to_rgb1")
    used.add("synthesis.b4.resample_filter")  # b4 has no image to upsample
    for j, res in enumerate(resolutions[1:]):
        b = f"synthesis.b{res}"
        layer(f"{b}.conv0", f"convs.{2 * j}", 2 * j + 1, res, up=True)
        layer(f"{b}.conv1", f"convs.{2 * j + 1}", 2 * j + 2, res)
        torgb(f"{b}.torgb", f"to_rgbs.{j}")
        out[f"to_rgbs.{j}.upsample.kernel"] = kernel(f"{b}.resample_filter")

    leftover = sorted(k for k in sd if k not in used)
    if leftover:
        raise E4EError(f"{where}: {len(leftover)} unexpected key(s) for a StyleGAN2-ADA generator "
                       f"(first: {', '.join(leftover[:3])})")
    clamp = (kwargs.get("synthesis_kwargs") or {}).get("conv_clamp")
    if clamp is not None:
        notes.append(f"conv_clamp={clamp}: NVIDIA clips activations to +-{clamp} (a float16 overflow guard); "
                     "not reproduced, it only acts on activations beyond that bound")
    return out, latent_avg, notes


def load_nvidia_generator(path):
    """NVIDIA .pkl -> (our Generator in eval mode, latent_avg (1, w_dim) or None), like the other loaders."""
    from e4e.checkpoints.rosinality import generator_from_state

    path = Path(path)
    pkl = load_nvidia_pkl(path)
    state, latent_avg, _ = convert_generator(pkl["G_ema"], pkl["init_kwargs"], pkl["class_names"],
                                             f"{path.name}:G_ema")
    return generator_from_state(state, f"{path.name}:G_ema (converted)"), latent_avg
