"""The gate as one native call (runtime/native_gate.c) for CPU inference: the same values as
Eq. 8 written out here, the parameters read as they are now, and the PyTorch path wherever
the native call does not apply (gradients, dispatch modes, dtypes, layouts, no compiler)."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import anysr_plugin as anysr
from anysr_plugin.runtime import native_gate
from anysr_plugin.runtime.gate import NATIVE_MAX_ELEMENTS, InterweavingGate, run_native_step

from conftest import randomize_gates, tiny_edsr

needs_kernel = pytest.mark.skipif(native_gate.kernel() is None, reason=f"{native_gate.status()}")


def eq8_reference(gate, feat, scale, n):
    """Eq. 8 per sample in float64, the scale pair after features floor(C*i/lambda) of each
    complete chunk (Eq. 7), or after all features for the concat ablation."""
    out = []
    for b in range(feat.shape[0]):
        pooled = feat[b].double().mean(dim=(1, 2)).tolist()
        sh, sw = (float(v) for v in scale[b if scale.shape[0] > 1 else 0])
        if gate.interweave == "concat":
            vec = pooled + [sh, sw]
        else:
            ends = {gate.channels * i // gate.lam for i in range(1, gate.lam + 1)}
            vec = []
            for j, v in enumerate(pooled):
                vec.append(v)
                if j + 1 in ends:
                    vec += [sh, sw]
        v = torch.tensor(vec, dtype=torch.float64)
        hidden = torch.relu(gate.fc1.weight.detach().double()[:, : len(v)] @ v + gate.fc1.bias.detach().double())
        z = gate.fc2.weight.detach().double()[:n] @ hidden + gate.fc2.bias.detach().double()[:n]
        g = 2 * torch.sigmoid(z) if gate.kind == "identity" else torch.sigmoid(z)
        out.append(feat[b].double() * g[:, None, None])
    return torch.stack(out)


def random_gate(channels, lam, interweave, kind, seed=0):
    gate = InterweavingGate(channels, lam, interweave, kind)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gate.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return gate


def run(gate, feat, scale, n, act=native_gate.ACT_NONE, slope=0.0):
    out = feat.clone()
    with torch.no_grad():
        step = gate.native_step(scale, n, feat.shape[0])
        assert step is not None
        assert run_native_step(step, out, act, slope)
    return out


@needs_kernel
@pytest.mark.parametrize("channels,lam,interweave", [(64, 4, "interleave"), (147, 4, "interleave"),
                                                     (48, 8, "interleave"), (48, 8, "concat")])
@pytest.mark.parametrize("kind", ["identity", "paper"])
def test_native_gate_equals_eq8_at_every_width_batch_and_activation(channels, lam, interweave, kind):
    gate = random_gate(channels, lam, interweave, kind)
    for n in (channels, channels * 7 // 10, channels // 2):
        for batch, per_sample in ((1, True), (3, True), (3, False)):
            feat = torch.randn(batch, n, 5, 7)
            scale = torch.rand(batch if per_sample else 1, 2) * 3 + 1
            ref = eq8_reference(gate, feat, scale, n)
            for act, slope, fn in ((native_gate.ACT_NONE, 0.0, lambda t: t), (native_gate.ACT_RELU, 0.0, torch.relu),
                                   (native_gate.ACT_LEAKY, 0.2, lambda t: F.leaky_relu(t, 0.2))):
                got = run(gate, feat, scale, n, act, slope)
                torch.testing.assert_close(got.double(), fn(ref), rtol=1e-5, atol=1e-5)


@needs_kernel
def test_identity_gate_leaves_features_bit_identical():
    gate = InterweavingGate(64, 4)  # fc2 zero: the gate is exactly 2 * sigmoid(0) = 1
    feat = torch.randn(2, 64, 6, 6)
    assert torch.equal(run(gate, feat, torch.tensor([[4.0, 4.0]]), 64, native_gate.ACT_RELU), torch.relu(feat))


@needs_kernel
def test_parameters_are_read_as_they_are_now():
    gate = random_gate(64, 4, "interleave", "paper")
    feat, scale = torch.randn(1, 64, 4, 4), torch.tensor([[2.0, 3.0]])
    before = run(gate, feat, scale, 64)
    with torch.no_grad():  # an optimizer step: in place, same memory
        for p in gate.parameters():
            p.mul_(0.5).add_(0.1)
    after = run(gate, feat, scale, 64)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after.double(), eq8_reference(gate, feat, scale, 64), rtol=1e-5, atol=1e-5)
    gate.double()  # new memory, another dtype: the PyTorch path
    with torch.no_grad():
        assert gate.native_step(scale, 64, 1) is None
    gate.float()  # new memory again: new arguments, right values
    torch.testing.assert_close(run(gate, feat, scale, 64).double(), eq8_reference(gate, feat, scale, 64),
                               rtol=1e-5, atol=1e-5)


class _Count(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@needs_kernel
def test_native_call_only_for_plain_eager_calls_without_gradients():
    gate = random_gate(64, 4, "interleave", "paper")
    scale = torch.tensor([[2.0, 2.0]])
    assert gate.native_step(scale, 64, 1) is None  # gradients recorded
    with torch.no_grad():
        with _Count():  # e.g. FLOP counting: the paper's form runs
            assert gate.native_step(scale, 64, 1) is None
        step = gate.native_step(scale, 64, 1)
        for feat in (torch.randn(1, 64, 4, 4).to(memory_format=torch.channels_last),  # not contiguous
                     torch.randn(1, 64, 4, 4).double(), torch.randn(1, 48, 4, 4), torch.randn(2, 64, 4, 4)):
            kept = feat.clone()
            assert not run_native_step(step, feat)
            assert torch.equal(feat, kept)
        assert gate.native_step(torch.ones(3, 2), 64, 2) is None  # 3 scales for a batch of 2


@needs_kernel
def test_large_maps_in_a_multithreaded_run_keep_the_eager_ops():
    gate = random_gate(64, 4, "interleave", "paper")
    side = int((NATIVE_MAX_ELEMENTS // 64) ** 0.5) + 1
    big = torch.randn(1, 64, side, side)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(2)
            assert not run_native_step(gate.native_step(torch.ones(1, 2), 64, 1), big)
            torch.set_num_threads(1)
            assert run_native_step(gate.native_step(torch.ones(1, 2), 64, 1), big)
    finally:
        torch.set_num_threads(threads)


@needs_kernel
def test_converted_model_without_gradients_runs_the_native_gate_and_matches_the_pytorch_path(monkeypatch):
    torch.manual_seed(0)
    model = anysr.anysrify(tiny_edsr(n_resblocks=3)).eval()
    randomize_gates(model)
    x = torch.rand(2, 3, 12, 12)
    calls = []
    fn = native_gate.kernel()

    def spy(*args):
        calls.append(args[2:4])  # batch, H*W
        return fn(*args)

    with torch.no_grad():
        for scale, width in ((4.0, 1.0), (2.0, 0.7), ((2.0, 3.0), 0.5)):
            with anysr.use_scale(model, scale), anysr.use_width(model, width):
                eager = model(x)
                monkeypatch.setitem(native_gate._state, "function", spy)
                native = model(x)
                monkeypatch.setitem(native_gate._state, "function", None)
                monkeypatch.setitem(native_gate._state, "status", "off (test)")
                plain = model(x)
                monkeypatch.setitem(native_gate._state, "function", fn)
            torch.testing.assert_close(native, plain, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(eager, native)
    assert calls and len(calls) == 3 * 3 and all(c == (2, 144) for c in calls)  # 3 blocks, 3 settings


def _status_in_subprocess(env: dict) -> str:
    code = "from anysr_plugin.runtime import native_gate; print(native_gate.status())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_a_compiler_or_when_switched_off_the_status_says_why(tmp_path):
    missing = _status_in_subprocess({"CC": str(tmp_path / "no-such-cc"), "ANYSR_CACHE_DIR": str(tmp_path)})
    assert missing == (f"native gate unavailable: no C compiler found (tried $CC={tmp_path / 'no-such-cc'}); gates "
                       "run as PyTorch operations, with the same values (install one, e.g. gcc, for faster CPU "
                       "inference)")
    failing = tmp_path / "failing-cc"
    failing.write_text("#!/bin/sh\necho 'cc: fatal error: no input files' >&2\nexit 1\n")
    failing.chmod(0o755)
    broken = _status_in_subprocess({"CC": str(failing), "ANYSR_CACHE_DIR": str(tmp_path)})
    assert broken == (f"native gate unavailable: building native_gate.c with {failing} failed (cc: fatal error: "
                      "no input files); gates run as PyTorch operations")
    assert not list(tmp_path.glob("*.so"))  # nothing half-written left behind
    off = _status_in_subprocess({"ANYSR_NATIVE_GATE": "0"})
    assert off == "native gate off (ANYSR_NATIVE_GATE=0): gates run as PyTorch operations"


@pytest.mark.skipif(not native_gate._compilers(), reason="no C compiler here")
def test_an_unwritable_cache_folder_is_named_and_the_gate_falls_back(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    status = _status_in_subprocess({"ANYSR_CACHE_DIR": str(blocked / "cache")})
    assert status.startswith("native gate unavailable: building native_gate.c with ")
    assert status.endswith(f"failed (cannot write the cache folder {blocked / 'cache'}: Not a directory; set "
                           "ANYSR_CACHE_DIR to a writable folder); gates run as PyTorch operations")


@needs_kernel
def test_built_once_into_the_cache_folder_then_reused(tmp_path):
    first = _status_in_subprocess({"ANYSR_CACHE_DIR": str(tmp_path)})
    built = list(tmp_path.glob("native_gate-*.so"))
    assert len(built) == 1 and first == f"native gate on: {built[0]}"
    stamp = built[0].stat().st_mtime_ns
    assert _status_in_subprocess({"ANYSR_CACHE_DIR": str(tmp_path)}) == first
    assert built[0].stat().st_mtime_ns == stamp


def test_model_runs_with_the_native_gate_switched_off():
    code = ("import torch, anysr_plugin as anysr; from conftest import tiny_edsr, randomize_gates; "
            "from anysr_plugin.runtime import native_gate; torch.manual_seed(0); "
            "m = anysr.anysrify(tiny_edsr(n_resblocks=2)).eval(); randomize_gates(m); x = torch.rand(1, 3, 8, 8)\n"
            "with torch.no_grad(), anysr.use_scale(m, 2.0): y = m(x)\n"
            "print(native_gate.status()); print(float(y.sum()))")
    outs = []
    for value in ("0", "1"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              cwd=os.path.dirname(__file__), env={**os.environ, "ANYSR_NATIVE_GATE": value})
        assert done.returncode == 0, done.stderr
        outs.append(done.stdout.split("\n"))
    assert outs[0][0].startswith("native gate off")
    assert abs(float(outs[0][1]) - float(outs[1][1])) <= 1e-4 * max(1.0, abs(float(outs[0][1])))


def test_copies_and_moves_keep_no_native_arguments():
    gate = random_gate(16, 4, "interleave", "paper")
    with torch.no_grad():
        gate.native_step(torch.ones(1, 2), 16, 1)
    assert not copy.deepcopy(gate)._layouts
    assert ("native", 16) in gate._layouts
    gate.double()  # a cast: nothing may keep the old float32 memory alive
    assert not gate._layouts


_SAME_VALUES = ("import torch; from anysr_plugin.runtime import native_gate\n"
                "from anysr_plugin.runtime.gate import InterweavingGate, run_native_step\n"
                "{setup}"
                "torch.manual_seed(0); g = InterweavingGate(64, 4, kind='paper')\n"
                "feat = torch.randn(2, 64, 5, 5); scale = torch.tensor([[2.0, 3.0], [1.5, 4.0]])\n"
                "with torch.no_grad():\n"
                "    ref = torch.relu(feat * g(feat, scale, 64)); out = feat.clone()\n"
                "    ok = run_native_step(g.native_step(scale, 64, 2), out, native_gate.ACT_RELU, 0.0)\n"
                "print(native_gate.status()); print(type(native_gate.kernel()).__name__)\n"
                "print(ok, float((out - ref).abs().max()))")


@pytest.mark.skipif(not native_gate._compilers(), reason="no C compiler here")
def test_a_compiler_that_refuses_the_avx2_clone_builds_the_portable_function(tmp_path):
    """On x86-64 the C function is built twice (AVX2 + FMA and baseline, picked by the loader); a
    compiler that refuses that (an old Clang, an assembler without AVX2) gets the portable build,
    with the same values."""
    real = native_gate._compilers()[0]
    picky = tmp_path / "picky-cc"
    picky.write_text(f'#!/bin/sh\ncase "$*" in *-DANYSR_PORTABLE*) exec "{real}" "$@";; esac\n'
                     'echo "picky-cc: target_clones is not supported" >&2\nexit 1\n')
    picky.chmod(0o755)
    code = _SAME_VALUES.format(setup="")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CC": str(picky), "ANYSR_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    status, _, result = done.stdout.strip().split("\n")
    built = list(tmp_path.glob("native_gate-*.so"))
    assert len(built) == 1 and status == f"native gate on: {built[0]}"
    ok, error = result.split()
    assert ok == "True" and float(error) < 1e-5


@pytest.mark.skipif(not native_gate._compilers(), reason="no C compiler here")
@pytest.mark.parametrize("case", ["no headers", "extension fails"])
def test_without_the_extension_module_the_function_is_called_through_ctypes(tmp_path, case):
    """Python's headers build the library as an extension module (the cheap call); without them,
    or when that build fails, the same C function is called through ctypes, with the same values,
    and the status says why."""
    env = {**os.environ, "ANYSR_CACHE_DIR": str(tmp_path)}
    setup = ""
    if case == "no headers":
        setup = "native_gate.python_headers = lambda: None\n"
        why = "this Python has no Python.h; install its headers, e.g. python3-dev, for a cheaper call"
    else:
        picky = tmp_path / "no-python-cc"
        picky.write_text(f'#!/bin/sh\ncase "$*" in *-DANYSR_PYTHON_MODULE*) echo "no-python-cc: Python.h: '
                         f'No such file" >&2; exit 1;; esac\nexec "{native_gate._compilers()[0]}" "$@"\n')
        picky.chmod(0o755)
        env["CC"] = str(picky)
        why = (f"the extension module failed: building native_gate.c with {picky} failed (no-python-cc: Python.h: "
               "No such file)")
    done = subprocess.run([sys.executable, "-c", _SAME_VALUES.format(setup=setup)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    status, kind, result = done.stdout.strip().split("\n")
    built = list(tmp_path.glob("native_gate-*.so"))
    assert len(built) == 1 and status == f"native gate on: {built[0]} (through ctypes: {why})"
    assert kind == "_FuncPtr"
    ok, error = result.split()
    assert ok == "True" and float(error) < 1e-5


@needs_kernel
def test_with_python_headers_the_library_is_an_extension_module():
    if native_gate.python_headers() is None:
        pytest.skip("this Python has no Python.h")
    assert type(native_gate.kernel()).__name__ == "builtin_function_or_method"
    assert "through ctypes" not in native_gate.status()


@needs_kernel
def test_a_large_map_lets_other_python_threads_run_during_the_call():
    """The extension module releases the GIL for large maps (ctypes always does), so a server
    running other Python threads is not stalled by a gate."""
    import threading
    import time

    gate = random_gate(64, 4, "interleave", "paper")
    feat = torch.rand(1, 64, 384, 384)
    with torch.no_grad():
        fn, address, n, batch, scale, stride = gate.native_step(torch.ones(1, 2), 64, 1)
    counter, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.5)  # far longer than the call: without a release the spinning thread cannot run in it
    worker = threading.Thread(target=spin)
    try:
        worker.start()
        time.sleep(0.05)  # let it start spinning, then take the GIL back
        before = counter[0]
        fn(feat.data_ptr(), feat.data_ptr(), 1, 384 * 384, scale.data_ptr(), stride, native_gate.ACT_NONE, 0.0,
           address)
        during = counter[0] - before
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(interval)
    assert during > 0
