"""Ahead-of-time compiled inference (AOTInductor): compile once per machine, load in about a second after.

In: an Inverter configured by e4e.fast (its op implementation and memory formats set), a precision and a
batch. Out: a callable x (batch, 3, H, W) -> (images, W+ codes), computed by a package that inductor
compiled ahead of time, kept on disk and loaded by every later process without tracing anything.

Why: torch.compile keeps its kernels on disk, but every new process still traces the model with Dynamo
before it can use them (16 s for the FFHQ model on an H200, docs/benchmarks.md). An AOTInductor package
(`torch._inductor.aoti_compile_and_package`) is the compiled graph with its kernels and a C++ runner:
loading it takes no tracing. The weights are not baked in (`package_constants_in_so=False`): the runner
reads the live module's parameters (`load_constants(..., user_managed=True)`), so one package serves any
weights of the same architecture and follows in-place weight updates.

On CUDA it is refused (E4EError): with torch 2.11 + CUDA 13 on an H100 (2026-12-07) the process died with a
segfault inside aoti_load_package, for the tiny test model in fp32; torch.compile (compile=True) is the
GPU's compiled path.

Packages live in compile_cache_dir()/aot/<key>.pt2; the key hashes what the compiled graph depends on:
torch's version, the device, precision, op implementation, batch and input shape, the module's structure
(its repr and every parameter's and buffer's name, shape, strides and dtype) and the source of this package's
nets and ops. A package that fails to load is compiled again; written atomically (two processes may race:
the last rename wins, both are valid).
"""
import functools
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from e4e.errors import E4EError, first_line

# the code whose change changes the compiled graph (files under src/e4e)
_CODE = ("nets", "ops", "inverter.py", "aot.py")


@functools.cache
def code_fingerprint() -> str:  # the files do not change under a running process: read them once
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _CODE:
        p = root / name
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


class AotForward(nn.Module):
    """The exported function: image -> (image at the generator's resolution, W+ codes), float32 outputs;
    bf16 autocast inside the graph when asked (export records it)."""

    def __init__(self, inv, bf16: bool):
        super().__init__()
        self.inv, self.bf16 = inv, bf16

    def forward(self, x):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            codes = self.inv.encode(x)
            images = self.inv.decode(codes, resize=False)
        return images.float(), codes.float()


def package_key(module: nn.Module, x: torch.Tensor, precision: str, impl: str) -> str:
    dev = x.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    tensors = [(k, tuple(v.shape), tuple(v.stride()), str(v.dtype)) for k, v in constants(module).items()]
    spec = dict(torch=torch.__version__, device=name, precision=precision, impl=impl, shape=list(x.shape),
                dtype=str(x.dtype), module=repr(module), tensors=tensors, code=code_fingerprint())
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def constants(module: nn.Module) -> dict:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def build_package(module: nn.Module, x: torch.Tensor, path: Path) -> None:
    """Export module(x) and compile it to the package at path (atomically)."""
    import torch._inductor
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.pt2")  # inductor wants the .pt2 suffix
    with torch.no_grad():
        ep = torch.export.export(module, (x,))
        torch._inductor.aoti_compile_and_package(
            ep, package_path=str(tmp), inductor_configs={"aot_inductor.package_constants_in_so": False})
    tmp.replace(path)


def load_package(module: nn.Module, path: Path):
    """-> the loaded runner, its constants pointed at module's live tensors."""
    import torch._inductor
    runner = torch._inductor.aoti_load_package(str(path))
    live = constants(module)
    runner.load_constants({k: live[k] for k in runner.get_constant_fqns()}, check_full_update=True,
                          user_managed=True)
    return runner


class AotInverter:
    """Callable x -> (images, codes): one package per input shape, loaded from the cache folder or built.

    Call it inside e4e.fast.precision_scope (TF32 switches are read when the kernels run); bf16 is in the
    graph."""

    def __init__(self, inv, precision: str, impl: str, cache_dir: Path):
        if next(inv.parameters()).device.type == "cuda":
            # a segfault cannot be caught: refuse rather than lose the user's process
            raise E4EError("--aot runs on the CPU only: loading an AOTInductor package crashed the process "
                           "on CUDA (torch 2.11, H100, docs/benchmarks.md); on a GPU use --compile")
        self.module = AotForward(inv, precision == "bf16").eval()
        self.precision, self.impl, self.dir = precision, impl, Path(cache_dir) / "aot"
        self.runners = {}

    def path_for(self, x: torch.Tensor) -> Path:
        return self.dir / f"{package_key(self.module, x, self.precision, self.impl)}.pt2"

    def runner(self, x: torch.Tensor):
        shape = tuple(x.shape)
        if shape not in self.runners:
            path = self.path_for(x)
            runner = None
            if path.is_file():
                try:
                    runner = load_package(self.module, path)
                except Exception as e:  # noqa: BLE001 - a stale or broken package: compile it again
                    print(f"{path}: not loadable ({type(e).__name__}); compiling again", file=sys.stderr)
            if runner is None:
                try:
                    build_package(self.module, x, path)
                    runner = load_package(self.module, path)
                except Exception as e:  # noqa: BLE001 - no C++ compiler, an op export can't take, ...
                    raise E4EError(f"ahead-of-time compile failed ({type(e).__name__}: {first_line(e, default='')}); "
                                   "run without --aot") from e
            self.runners[shape] = runner
        return self.runners[shape]

    def __call__(self, x: torch.Tensor):
        return self.runner(x)(x)
