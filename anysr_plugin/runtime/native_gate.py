"""The gate as one native call for CPU inference (float32), built on first use.

Why: without gradients a gate is about ten tiny tensor operations between two large
convolutions, each a few microseconds of dispatch (several times more right after a
convolution), which made a converted EDSR-baseline encoder at full width a quarter to a half
slower than the original at LR 16x16.  ``native_gate.c`` computes the whole gate, and the product (with the block's
ReLU / LeakyReLU when it follows), in one call that reads the gate's parameters as they are.

How: the C file ships with the package and is compiled with the system's C compiler (``$CC``,
else ``cc``, ``gcc`` or ``clang``) into ``$ANYSR_CACHE_DIR`` (default
``$XDG_CACHE_HOME/anysr_plugin`` or ``~/.cache/anysr_plugin``) the first time a gate could use
it (a fraction of a second); the file name carries a hash of the source, the flags and the
interpreter, so an upgraded source is rebuilt.  With Python's headers it is built as a small
extension module and called directly (the cheapest call there is); without them it is loaded
with ctypes (the same function, a costlier call).  No compiler, a failed build, or
``ANYSR_NATIVE_GATE=0``: gates run as PyTorch operations, with the same values.
:func:`status` says which, and why.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("native_gate.c")
FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp-simd")

#: activation codes of the C function
ACT_NONE, ACT_RELU, ACT_LEAKY = 0, 1, 2

_lock = threading.Lock()
_state: dict = {"function": None, "status": None}


def cache_dir() -> Path:
    """Where built libraries are kept: ``$ANYSR_CACHE_DIR``, else ``$XDG_CACHE_HOME/anysr_plugin``,
    else ``~/.cache/anysr_plugin``."""
    if os.environ.get("ANYSR_CACHE_DIR"):
        return Path(os.environ["ANYSR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anysr_plugin"


def disabled() -> bool:
    return os.environ.get("ANYSR_NATIVE_GATE", "1").strip().lower() in ("0", "off", "false", "no")


def _compilers() -> list:
    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    return [path for path in (shutil.which(name) for name in names) if path]


def python_headers() -> str | None:
    """The folder holding this interpreter's ``Python.h``, or None (then the library is called
    through ctypes)."""
    folder = sysconfig.get_paths().get("include")
    return folder if folder and os.path.isfile(os.path.join(folder, "Python.h")) else None


def _build(compiler: str, target: Path, extra: tuple = ()) -> str | None:
    """Compile SOURCE with `extra` flags into `target` (atomically, so processes building at once
    do not clash); None on success, else the compiler's first error line."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        return (f"cannot write the cache folder {target.parent}: {exc.strerror or exc}; set ANYSR_CACHE_DIR to a "
                "writable folder")
    try:
        # a compiler without OpenMP SIMD; one that refuses the AVX2 clone (an old Clang, an assembler
        # without AVX2): the portable function alone
        plain = tuple(f for f in FLAGS if f != "-fopenmp-simd")
        for flags in (FLAGS, plain, (*FLAGS, "-DANYSR_PORTABLE"), (*plain, "-DANYSR_PORTABLE")):
            done = subprocess.run([compiler, *flags, *extra, str(SOURCE), "-o", tmp, "-lm"], capture_output=True,
                                  text=True, timeout=120)
            if done.returncode == 0:
                os.replace(tmp, target)
                return None
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        return lines[0] if lines else f"exit status {done.returncode}"
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class GateArgs(ctypes.Structure):
    """The C ``anysr_gate_t``: what stays the same between calls of one gate at one width."""

    _fields_ = [("n", ctypes.c_int64), ("hidden", ctypes.c_int64), ("w1_row", ctypes.c_int64),
                ("length", ctypes.c_int64), ("w1", ctypes.c_void_p), ("b1", ctypes.c_void_p),
                ("w2", ctypes.c_void_p), ("b2", ctypes.c_void_p), ("cols", ctypes.c_void_p),
                ("pairs", ctypes.c_void_p), ("npairs", ctypes.c_int64), ("gain", ctypes.c_float)]


def gate_args(n: int, w1, b1, w2, b2, cols, pairs, length: int, gain: float):
    """``(address, keep)``: the address of a :class:`GateArgs` for the C call and the objects that
    must stay alive while it is used (the struct, the index tensors and the parameters it points
    into, so their memory cannot be reused under it).  `cols` / `pairs` / `length`: the gate's
    input layout at width n as int64 CPU tensors (``InterweavingGate._layout``)."""
    args = GateArgs(n, w1.shape[0], w1.shape[1], length, w1.data_ptr(), b1.data_ptr(), w2.data_ptr(), b2.data_ptr(),
                    cols.data_ptr(), pairs.data_ptr(), pairs.numel(), gain)
    return ctypes.addressof(args), (args, cols, pairs, w1, b1, w2, b2)


def _load(path: Path):
    """The C function of the library at `path` through ctypes."""
    lib = ctypes.CDLL(str(path))
    fn = lib.anysr_gate_f32
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [p, p, i64, i64, p, i64, ctypes.c_int, ctypes.c_float, p]
    fn.restype = ctypes.c_int
    return fn


def _load_module(path: Path):
    """``gate`` of the extension module at `path` (same arguments as the C function)."""
    loader = importlib.machinery.ExtensionFileLoader("_anysr_native_gate", str(path))
    spec = importlib.util.spec_from_file_location("_anysr_native_gate", str(path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module.gate


def kernel():
    """The C function, or None (then :func:`status` says why).  Builds it on first call."""
    if _state["status"] is not None:
        return _state["function"]
    with _lock:
        if _state["status"] is None:
            _state["function"], _state["status"] = _prepare()
    return _state["function"]


def _prepare():
    if disabled():
        return None, "off (ANYSR_NATIVE_GATE=0): gates run as PyTorch operations"
    if not SOURCE.is_file():
        return None, f"unavailable: {SOURCE.name} is missing from the installed package; gates run as PyTorch operations"
    compilers = _compilers()
    if not compilers:
        tried = f"$CC={os.environ['CC']}" if os.environ.get("CC") else "cc, gcc, clang"
        return None, (f"unavailable: no C compiler found (tried {tried}); gates run as PyTorch operations, "
                      "with the same values (install one, e.g. gcc, for faster CPU inference)")
    headers = python_headers()
    why = "this Python has no Python.h; install its headers, e.g. python3-dev, for a cheaper call"
    if headers is not None:
        function, target, error = _build_and_load(compilers[0], ("-DANYSR_PYTHON_MODULE", f"-I{headers}"),
                                                  _load_module)
        if function is not None:
            return function, f"on: {target}"
        why = f"the extension module failed: {error}"
    function, target, error = _build_and_load(compilers[0], (), _load)
    if function is None:
        return None, f"unavailable: {error}; gates run as PyTorch operations"
    return function, f"on: {target} (through ctypes: {why})"


def _build_and_load(compiler: str, extra: tuple, load):
    """``(function or None, library path, what failed or None)`` for SOURCE built with `extra`
    flags (once per source, flags and interpreter: their hash is in the file name) and loaded
    with `load`."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join((*FLAGS, *extra)).encode()
                            + f"{platform.machine()} {sys.platform} {sysconfig.get_config_var('EXT_SUFFIX')}".encode()
                            ).hexdigest()[:16]
    target = cache_dir() / f"native_gate-{digest}.so"
    if not target.is_file():
        error = _build(compiler, target, extra)
        if error is not None:
            return None, target, f"building {SOURCE.name} with {compiler} failed ({error})"
    try:
        return load(target), target, None
    except (OSError, AttributeError, ImportError) as exc:
        return None, target, f"loading {target} failed ({exc})"


def status() -> str:
    """One line: whether CPU inference gates run natively, and if not, why."""
    kernel()
    return f"native gate {_state['status']}"


@contextlib.contextmanager
def switched_off():
    """Within this block gates run as PyTorch operations (to compare the two paths, or to rule
    the native call out while debugging)."""
    kernel()
    with _lock:
        saved = dict(_state)
        _state["function"], _state["status"] = None, "off (inside native_gate.switched_off())"
    try:
        yield
    finally:
        with _lock:
            _state.update(saved)


def reset() -> None:
    """Forget the loaded function and the status (tests; a changed environment)."""
    with _lock:
        _state["function"], _state["status"] = None, None


__all__ = ["kernel", "status", "switched_off", "reset", "cache_dir", "disabled", "python_headers", "gate_args", "GateArgs",
           "SOURCE", "ACT_NONE", "ACT_RELU", "ACT_LEAKY"]
