"""e4e.fast: the inference fast path keeps parity with the fp32 reference."""
import pytest
import torch

from e4e.cli import main
from e4e.errors import E4EError
from e4e import fast
from e4e.fast import bucket, default_impl, precision_scope, prepare, resolve_precision
from e4e.latents import load_latents
from tiny_inverters import float64_reference, make_images, save_tiny, tiny_inverter


def reference(inv, x):
    """The float64 composition of the parts (tiny_inverters.float64_reference), back in float32."""
    img, codes = float64_reference(inv, x)
    return img.float().to(x.device), codes.float().to(x.device)


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def test_fp32_is_the_reference():
    inv = tiny_inverter()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    ref_img, ref_codes = reference(inv, x)
    img, codes = prepare(inv, "fp32")(x)
    assert rel(img, ref_img) < 1e-5 and rel(codes, ref_codes) < 1e-5  # fp32 rounding only
    with torch.no_grad(), precision_scope("fp32", x.device):  # and exactly the plain (unprepared) model
        assert torch.equal(codes, inv.encode(x)) and torch.equal(img, inv.decode(inv.encode(x), resize=False))


def test_default_is_fp32_reference_on_cpu_and_tf32_on_cuda(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) == resolve_precision(None, cpu) == "fp32"
    assert resolve_precision("auto", cuda) == "tf32"
    assert resolve_precision("fp32", cuda) == "fp32"  # the strict reference stays available
    inv = tiny_inverter()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ref_img, ref_codes = reference(inv, x)
    img, codes = prepare(inv)(x)  # no arguments on CPU: the fp32 reference
    assert rel(img, ref_img) < 1e-5 and rel(codes, ref_codes) < 1e-5  # against the float64 composition
    with torch.no_grad():  # and exactly the plain (unprepared) model
        assert torch.equal(codes, inv.encode(x)) and torch.equal(img, inv.decode(inv.encode(x), resize=False))
    assert all(m.grouped for m in inv.decoder.modules() if hasattr(m, "grouped"))


def test_default_impl(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(fast, "triton_available", lambda device: torch.device(device).type == "cuda")
    monkeypatch.setattr(fast, "TRITON_BY_DEFAULT", True)  # the default (E4E_KERNELS unset)
    assert default_impl(cuda) == "triton" and default_impl(torch.device("cpu")) == "ref"
    monkeypatch.setattr(fast, "TRITON_BY_DEFAULT", False)  # E4E_KERNELS=ref
    assert default_impl(cuda) == "ref"
    monkeypatch.setattr(fast, "TRITON_BY_DEFAULT", True)
    assert default_impl(cuda, compile=True) == "taps"  # torch.compile gets the fusable FIR taps
    monkeypatch.setattr(fast, "triton_available", lambda device: False)
    assert default_impl(cuda) == "ref"  # no Triton installed: the PyTorch reference


def test_configure_sets_the_generator_and_returns_the_impl():
    inv = tiny_inverter()
    assert fast.configure(inv, compile=True) == "taps"
    assert {m.impl for m in inv.decoder.modules() if hasattr(m, "impl")} == {"taps"}
    assert fast.configure(inv, impl="ref") == "ref"
    with pytest.raises(ValueError, match="impl"):
        fast.configure(inv, impl="cuda")


@pytest.mark.parametrize("impl", ["ref", "fold"])
def test_nhwc_generator_and_folded_firs_compute_the_reference(impl):
    """The benchmark's candidates for a faster default, on CPU: prepare(channels_last=True) (NHWC
    generator) and impl="fold" (FIRs folded into the convolutions) give the fp32 reference's images; the
    next prepare without the flag takes the generator back to NCHW."""
    inv = tiny_inverter()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ref_img, ref_codes = reference(inv, x)
    img, codes = prepare(inv, "fp32", impl=impl, channels_last=impl == "ref")(x)
    assert inv.decoder.channels_last == (impl == "ref")
    assert rel(img, ref_img) < 1e-5 and rel(codes, ref_codes) < 1e-5
    prepare(inv, "fp32")
    assert not inv.decoder.channels_last


def test_cuda_graphs_are_ignored_on_cpu():
    """graphs=True is a CUDA option: on CPU the eager reference runs, bit for bit, at any batch size."""
    inv = tiny_inverter()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    img, codes = prepare(inv, graphs=True, batch_size=4)(x)
    with torch.no_grad():
        assert torch.equal(codes, inv.encode(x)) and torch.equal(img, inv.decode(inv.encode(x), resize=False))


def test_graphs_and_nhwc_generator_are_the_default_for_cudas_fast_eager_paths_only():
    assert fast.graphs_by_default("cuda", "auto") and fast.graphs_by_default("cuda", "bf16")
    assert not fast.graphs_by_default("cuda", "fp32")  # the strict reference stays plain
    assert not fast.graphs_by_default("cuda", "tf32", compile=True)  # compile has its own CUDA graphs
    assert not fast.graphs_by_default("cpu", "auto")
    inv = tiny_inverter()
    fn = prepare(inv)  # CPU: the eager reference, NCHW
    assert not inv.decoder.channels_last and not isinstance(fn.step, fast.GraphedForward)


def test_buckets_are_powers_of_two_capped_at_the_batch():
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]
    assert [bucket(n, 6) for n in (1, 3, 5, 6)] == [1, 4, 6, 6]
    assert len({bucket(n, 64) for n in range(1, 65)}) == 7  # a folder of any size: at most 7 shapes


def test_compile_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fast.compile_cache_dir() == tmp_path / ".cache" / "e4e" / "inductor"
    assert (tmp_path / ".cache" / "e4e" / "inductor").is_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert fast.compile_cache_dir() == tmp_path / "mine"  # the user's choice wins


def test_cudnn_workspace_cap_keeps_the_users_value(monkeypatch):
    monkeypatch.delenv("CUDNN_CONV_WSCAP_DBG", raising=False)
    assert fast.limit_cudnn_workspace(512) == "512"
    monkeypatch.setenv("CUDNN_CONV_WSCAP_DBG", "64")
    assert fast.limit_cudnn_workspace() == "64"


def test_bf16_stays_close():
    inv = tiny_inverter()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    ref_img, ref_codes = reference(inv, x)
    img, codes = prepare(inv, "bf16")(x)
    assert img.dtype == torch.float32
    assert 0 < (img - ref_img).abs().max() / ref_img.abs().max() < 5e-2  # bf16 really ran, and stayed close
    assert (codes - ref_codes).abs().max() / ref_codes.abs().max() < 2e-2


def test_precision_scope_restores_global_flags():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with precision_scope("tf32", torch.device("cpu")):
        assert torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with pytest.raises(ValueError, match="precision"):
        prepare(tiny_inverter(), "fp16")


@pytest.mark.slow
def test_compiled_matches_reference(monkeypatch, tmp_path):
    """torch.compile (inductor, C++ on CPU) with the FIR as fused taps: same numbers up to rounding."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # not the user's ~/.cache/e4e/inductor
    torch._dynamo.reset()
    inv = tiny_inverter()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ref_img, ref_codes = reference(inv, x)
    img, codes = prepare(inv, "fp32", compile=True)(x)
    assert (img - ref_img).abs().max() / ref_img.abs().max() < 1e-4
    assert (codes - ref_codes).abs().max() / ref_codes.abs().max() < 1e-4


@pytest.mark.slow
def test_compiled_pads_to_buckets_instead_of_recompiling(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    torch._dynamo.reset()
    inv = tiny_inverter()
    fn = prepare(inv, "fp32", compile=True, batch_size=4)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    full_img, full_codes = fn(x)
    with torch._dynamo.config.patch(error_on_recompile=True):  # a second shape would recompile
        img, codes = fn(x[:3])  # bucket 4: padded
    assert img.shape[0] == 3 and codes.shape[0] == 3
    assert (img - full_img[:3]).abs().max() < 1e-5 and (codes - full_codes[:3]).abs().max() < 1e-5
    assert any(tmp_path.iterdir())  # the compiled code went to the persistent cache


@pytest.mark.slow
def test_aot_package_matches_reference_and_loads_without_tracing(monkeypatch, tmp_path):
    """compile="aot": the AOTInductor package gives the reference's numbers, is written once, and a second
    prepare (a new process's view: nothing in memory) loads it instead of compiling; padded batches use
    the bucket's package; the weights are the live module's, not a copy baked in."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    inv = tiny_inverter()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    ref_img, ref_codes = reference(inv, x)
    fn = prepare(inv, "fp32", compile="aot", batch_size=4)
    img, codes = fn(x)
    assert (img - ref_img).abs().max() / ref_img.abs().max() < 1e-4
    assert (codes - ref_codes).abs().max() / ref_codes.abs().max() < 1e-4
    packages = list((tmp_path / "aot").glob("*.pt2"))
    assert len(packages) == 1
    fn2 = prepare(inv, "fp32", compile="aot", batch_size=4)
    img2, _ = fn2(x[:3])  # bucket 4: the same package, loaded
    assert list((tmp_path / "aot").glob("*.pt2")) == packages
    assert (img2 - img[:3]).abs().max() < 1e-5
    with torch.no_grad():  # the package reads the module's own weights
        inv.latent_avg.add_(0.5)
    _, codes3 = fn2(x)
    assert (codes3 - (ref_codes + 0.5)).abs().max() / ref_codes.abs().max() < 1e-4
    with pytest.raises(ValueError, match="compile must be one of"):
        prepare(inv, "fp32", compile="jit")


def test_aot_compile_failure_is_one_line(monkeypatch, tmp_path):
    import e4e.aot
    from e4e.errors import E4EError

    def broken(*a, **k):
        raise RuntimeError("no C++ compiler found\nlong log")
    monkeypatch.setattr(e4e.aot, "build_package", broken)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    fn = prepare(tiny_inverter(), "fp32", compile="aot")
    with pytest.raises(E4EError, match="ahead-of-time compile failed \\(RuntimeError: no C\\+\\+ compiler found\\); "
                                       "run without --aot"):
        fn(torch.zeros(1, 3, 32, 32))


def test_strict_fp32_takes_cudnns_v7_api_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("TORCH_CUDNN_V8_API_DISABLED", raising=False)
    prepare(tiny_inverter(), "fp32")  # CPU: no cuDNN, nothing set
    assert "TORCH_CUDNN_V8_API_DISABLED" not in __import__("os").environ
    assert fast.strict_fp32_cudnn() == "1"
    monkeypatch.setenv("TORCH_CUDNN_V8_API_DISABLED", "0")
    assert fast.strict_fp32_cudnn() == "0"  # the user's choice stands


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_strict_fp32_on_cuda_sets_the_v7_api_before_the_first_conv():
    """In a fresh process (PyTorch reads the variable once): prepare(fp32) sets it, and the numbers still
    match the reference."""
    import subprocess
    import sys
    code = ("import os, torch, sys; sys.path.insert(0, 'tests'); from tiny_inverters import tiny_inverter; "
            "from e4e.fast import prepare; inv = tiny_inverter().cuda(); x = torch.rand(2, 3, 32, 32, device='cuda'); "
            "img, _ = prepare(inv, 'fp32')(x); print(os.environ['TORCH_CUDNN_V8_API_DISABLED'], bool(torch.isfinite(img).all()))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TORCH_CUDNN_V8_API_DISABLED"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["1", "True"]


def test_aot_key_follows_what_the_graph_depends_on():
    from e4e.aot import AotForward, package_key
    inv = tiny_inverter()
    m = AotForward(inv, False)
    x = torch.zeros(2, 3, 32, 32)
    k = package_key(m, x, "fp32", "ref")
    assert k == package_key(AotForward(tiny_inverter(), False), x, "fp32", "ref")  # other weights: same
    assert len({k, package_key(m, x[:1], "fp32", "ref"), package_key(m, x, "tf32", "ref"),
                package_key(m, x, "fp32", "taps")}) == 4


def test_cli_invert_bf16(tmp_path, capsys):
    make_images(tmp_path / "imgs", n_good=2)
    ckpt = save_tiny(tmp_path / "tiny.safetensors")
    outs = {}
    for p in ("fp32", "bf16"):
        rc = main(["invert", str(tmp_path / "imgs"), "-o", str(tmp_path / p), "--checkpoint", str(ckpt),
                   "--precision", p, "-q"])
        assert rc == 0
        outs[p] = load_latents(tmp_path / p / "latents.npz")
    a, b = outs["fp32"], outs["bf16"]
    assert a.names == b.names and len(a.names) == 5
    assert 0 < (a.codes - b.codes).abs().max() / a.codes.abs().max() < 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_cuda_graphs_outputs_survive_the_next_call(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    torch._dynamo.reset()
    inv = tiny_inverter().cuda()
    fn = prepare(inv, "fp32", compile=True)
    xs = [torch.rand(2, 3, 32, 32, device="cuda") * 2 - 1 for _ in range(3)]
    outs = [fn(x) for x in xs]  # the third call replays the recorded graph
    for x, (img, codes) in zip(xs, outs):
        ref_img, ref_codes = reference(inv, x)
        assert (img - ref_img).abs().max() / ref_img.abs().max() < 1e-3
        assert (codes - ref_codes).abs().max() / ref_codes.abs().max() < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_aot_on_cuda_is_refused_in_one_line(monkeypatch, tmp_path):
    """Loading an AOTInductor package segfaulted on CUDA (torch 2.11, H100): refused before compiling."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    inv = tiny_inverter().cuda()
    with pytest.raises(E4EError, match="CPU only"):
        prepare(inv, "fp32", compile="aot")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_no_flag_cuda_default_is_fast_and_close():
    """prepare(inv) on CUDA: TF32, shared modconv, Triton kernels where installed, NHWC generator, CUDA
    graphs; near strict fp32."""
    inv = tiny_inverter().cuda()
    x = torch.rand(4, 3, 32, 32, device="cuda") * 2 - 1
    ref_img, ref_codes = reference(inv, x)  # before prepare: grouped, reference ops, strict fp32
    fn = prepare(inv)
    impl = "triton" if fast.triton_available("cuda") else "ref"
    assert {m.impl for m in inv.decoder.modules() if hasattr(m, "impl")} == {impl}
    assert not any(m.grouped for m in inv.decoder.modules() if hasattr(m, "grouped"))
    assert inv.decoder.channels_last and isinstance(fn.step, fast.GraphedForward)
    img, codes = fn(x)
    assert len(fn.step.graphs) == 1 and not fn.step.failed
    assert (img - ref_img).abs().max() / ref_img.abs().max() < 5e-3
    assert (codes - ref_codes).abs().max() / ref_codes.abs().max() < 5e-3
    strict_img, _ = prepare(inv, "fp32", impl="ref")(x)  # the strict path: shared form, fp32, rounding only
    assert (strict_img - ref_img).abs().max() / ref_img.abs().max() < 1e-5
    for kw in (dict(channels_last=True), dict(impl="fold")):  # the benchmark's candidates for the default
        img, _ = prepare(inv, "fp32", **kw)(x)
        assert (img - ref_img).abs().max() / ref_img.abs().max() < 1e-4, kw


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_cuda_graphs_replay_the_eager_forward(precision):
    """prepare(graphs=True): the same kernels as eager, replayed: the same images and codes (to within
    rounding: cuDNN may plan a layer differently under capture), one graph per bucket (3 and 4 images
    share the bucket of 4), outputs that survive the next call."""
    inv = tiny_inverter().cuda()
    x = torch.rand(4, 3, 32, 32, device="cuda") * 2 - 1
    eager_img, eager_codes = prepare(inv, precision, graphs=False, channels_last=False)(x)
    run = prepare(inv, precision, graphs=True, channels_last=False, batch_size=4)
    img, codes = run(x)
    tol = 1e-6 if precision == "tf32" else 1e-2
    assert rel(img, eager_img) < tol and rel(codes, eager_codes) < tol
    first = img.clone()
    img3, _ = run(x[:3].flip(0))  # a different batch in the same bucket: replayed, not captured again
    assert img3.shape[0] == 3 and torch.equal(img, first)  # the earlier output was not overwritten
    assert rel(img3, eager_img[:3].flip(0)) < tol
    assert isinstance(run.step, fast.GraphedForward)
    assert len(run.step.graphs) == 1 and not run.step.failed
    img2, _ = run(x[:2])  # a second bucket: its own graph, in the first one's memory pool
    assert len(run.step.graphs) == 2 and rel(img2, eager_img[:2]) < tol
    again, _ = run(x)  # the first graph replayed after the second: still the eager result
    assert rel(again, eager_img) < tol


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_capture_that_fails_runs_eager_and_says_so_once(capsys):
    def syncs(x):  # .item() waits for the device: not allowed while a stream is captured
        return (x * float(x.sum().item()),)
    g = fast.GraphedForward(syncs)
    x = torch.ones(2, device="cuda")
    assert torch.equal(g(x)[0], x * 2) and torch.equal(g(x)[0], x * 2)
    assert g.failed and capsys.readouterr().err.count("CUDA graph capture failed") == 1
    # CUDA stays usable: random numbers outside a graph failed after such a capture (H100, 2026-12-07)
    assert torch.rand(3, device="cuda").shape == (3,)


@pytest.mark.slow
def test_portable_compile_cache_round_trip(monkeypatch, tmp_path):
    """What one process compiled, saved to one file, warms a fresh cache folder (another machine)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "a"))
    torch._dynamo.reset()
    torch.compiler.reset()
    fn = torch.compile(lambda x: torch.nn.functional.leaky_relu(x * 3 + 1, 0.2).sum(1))
    x = torch.randn(4, 8)
    want = fn(x)
    n = fast.save_portable_cache(tmp_path / "cache.bin")
    assert n > 0 and (tmp_path / "cache.bin").stat().st_size == n
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "b"))  # an empty cache, as on a new machine
    torch._dynamo.reset()
    assert fast.load_portable_cache(tmp_path / "cache.bin")
    torch.testing.assert_close(fn(x), want)
    assert not fast.load_portable_cache(tmp_path / "missing.bin")
    (tmp_path / "bad.bin").write_bytes(b"not a cache")
    assert not fast.load_portable_cache(tmp_path / "bad.bin")  # a cold compile, never a crash
