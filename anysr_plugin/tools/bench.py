"""Latency and peak memory per width and scale, side by side with the unconverted model.

Method (what makes the ratios trustworthy on a noisy CPU):

* every candidate (the original model, then the AnySR model at each width and scale)
  lives in **one process** and runs on the same input tensors;
* runs are **interleaved**: repeat r runs every candidate once, in an order rotated by r,
  so drifts (thermal, other load, allocator state) hit all candidates alike;
* ``warmup`` untimed rounds first (allocator, oneDNN primitive caches, CUDA kernels);
* the statistic is the **median** of ``repeats`` timed runs (quartiles reported too);
* eval mode and ``torch.inference_mode``; on CUDA every run is bracketed by
  ``torch.cuda.synchronize``;
* ``clock="wall"`` (default) times wall-clock; ``clock="cpu"`` times the process's CPU
  time (``time.process_time``), which other processes on a shared, oversubscribed
  machine do not inflate -- use it with ``threads=1`` for robust *ratios* on a busy CPU
  (with several threads it also counts the threads' spin-waiting).

Peak memory is measured in a separate, untimed run per candidate: on CUDA
``torch.cuda.max_memory_allocated`` above the level before the call; on CPU the peak of
live bytes of the tensors the call's operators allocate (tracked by a dispatch mode:
activations and temporaries visible to PyTorch, not oneDNN's internal scratch).
"""
from __future__ import annotations

import contextlib
import json
import platform
import statistics
import time
import weakref
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..runtime.control import anysr_blocks, get_state, scale_pair, unwrap, use_scale, use_width
from ..runtime.control import anysr_blocks as _blocks
from ..runtime import native_gate
from ..runtime.errors import ConfigError
from ..runtime.methods import adapter_for
from .cost import safe_deepcopy
from .train import TrainConfig, Trainer

__all__ = ["bench_candidates", "bench_widths", "peak_memory", "format_markdown", "Candidate",
           "finetune_step_report", "format_finetune_markdown"]


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes held by tensors that operators create while it is active."""

    def __init__(self):
        super().__init__()
        self.live: dict = {}
        self.current = 0
        self.peak = 0

    def _free(self, key):
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                try:
                    storage = t.untyped_storage()
                    key, nbytes = storage.data_ptr(), storage.nbytes()
                except Exception:  # pragma: no cover - exotic tensors
                    continue
                if key and key not in self.live:
                    self.live[key] = nbytes
                    self.current += nbytes
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(t, self._free, key)
        return out


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by one call of ``fn`` beyond what was allocated before."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return int(peak)
    mode = _LiveBytes()
    with mode:
        out = fn()
    del out
    return int(mode.peak)


class Candidate:
    """One thing to time: a name, a label dict for the report and a zero-argument callable."""

    def __init__(self, name: str, fn: Callable[[], object], **labels):
        self.name, self.fn, self.labels = name, fn, labels
        self.times: list = []
        self.peak_mem = None


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def bench_candidates(cands: Sequence[Candidate], device, warmup: int = 3, repeats: int = 10,
                     memory: bool = True, progress: bool = False, clock: str = "wall") -> None:
    """Time the candidates interleaved (results land on each candidate)."""
    device = torch.device(device)
    if clock not in CLOCKS:
        raise ConfigError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and device.type == "cuda":
        raise ConfigError("clock='cpu' measures CPU time; use clock='wall' on CUDA")
    timer = CLOCKS[clock]
    total = warmup + repeats
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total * len(cands), desc="bench", unit="run")
    with torch.inference_mode():
        for r in range(total):
            k = r % len(cands)
            order = list(cands[k:]) + list(cands[:k])
            for c in order:
                _sync(device)
                t0 = timer()
                out = c.fn()
                _sync(device)
                dt = timer() - t0
                del out
                if r >= warmup:
                    c.times.append(dt * 1e3)
                if bar is not None:
                    bar.update(1)
        if memory:
            for c in cands:
                c.peak_mem = peak_memory(c.fn, device)
    if bar is not None:
        bar.close()


def _quantiles(xs):
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def bench_widths(model: nn.Module, inputs: tuple, widths: Optional[Sequence[float]] = None,
                 scales: Sequence = (None,), original: Optional[nn.Module] = None,
                 make_inputs: Optional[Callable] = None, device="cpu", warmup: int = 3, repeats: int = 10,
                 memory: bool = True, progress: bool = False, threads: Optional[int] = None,
                 clock: str = "wall") -> dict:
    """Latency and peak memory of ``model`` at every width x scale, and of ``original``.

    ``inputs``: the call's inputs (moved to ``device``); or ``make_inputs(scale)`` when
    they depend on the scale (LIIF's coord/cell).  ``scales``: the scales to set with
    ``use_scale`` (``None`` = none; needed for the gates only, the encoder's cost does
    not depend on it).  Returns ``{"device", "torch", "threads", "warmup", "repeats",
    "results": [{"model", "width", "scale", "input_shape", "median_ms", "p25_ms",
    "p75_ms", "ratio", "peak_mem_bytes", "mem_ratio"}, ...]}``; ``ratio`` is the median
    relative to the original's median at the same scale (or to the AnySR full width
    when no original is given).
    """
    device = torch.device(device)
    if threads is not None:
        torch.set_num_threads(int(threads))
    model = unwrap(model).to(device).eval()
    if original is not None:
        original = unwrap(original).to(device).eval()
    widths = list(widths) if widths is not None else list(get_state(model).config.widths)
    is_anysr = bool(anysr_blocks(model))
    cands = []

    def mk_inputs(scale):
        xs = make_inputs(scale) if make_inputs is not None else inputs
        return tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in xs)

    for scale in scales:
        xs = mk_inputs(scale)
        shape = next((list(x.shape) for x in xs if isinstance(x, torch.Tensor)), None)
        if original is not None:
            cands.append(Candidate("original", (lambda xs=xs: original(*xs)), model="original", width=1.0,
                                   scale=None if scale is None else list(scale_pair(scale)), input_shape=shape))
        for w in widths:
            def run(xs=xs, w=w, scale=scale):
                with contextlib.ExitStack() as st:
                    if is_anysr:
                        st.enter_context(use_width(model, w))
                        if scale is not None:
                            st.enter_context(use_scale(model, scale))
                    return model(*xs)
            cands.append(Candidate(f"anysr w={w:g}", run, model="anysr", width=float(w),
                                   scale=None if scale is None else list(scale_pair(scale)), input_shape=shape))
    bench_candidates(cands, device, warmup, repeats, memory, progress, clock)
    results = []
    for c in cands:
        med = statistics.median(c.times)
        p25, p75 = _quantiles(c.times)
        results.append(dict(c.labels, median_ms=med, p25_ms=p25, p75_ms=p75, runs=len(c.times),
                            peak_mem_bytes=c.peak_mem))
    for r in results:
        ref = next((q for q in results if q["scale"] == r["scale"] and
                    (q["model"] == "original" if original is not None else q["width"] == 1.0)), None)
        r["ratio"] = r["median_ms"] / ref["median_ms"] if ref else None
        r["mem_ratio"] = (r["peak_mem_bytes"] / ref["peak_mem_bytes"]
                          if ref and ref["peak_mem_bytes"] and r["peak_mem_bytes"] is not None else None)
    return {"device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "clock": clock, "warmup": warmup, "repeats": repeats,
            "native_gate": native_gate.status() if device.type == "cpu" else None, "results": results}


def format_markdown(report: dict) -> str:
    lines = [f"device: {report['device']} ({report.get('cpu', '')}), torch {report['torch']}, "
             f"{report['threads']} threads, {report.get('clock', 'wall')} clock, {report['warmup']} warm-up + {report['repeats']} interleaved runs",
             *([report["native_gate"]] if report.get("native_gate") else []),
             "",
             "| model | width | scale | input | median ms | p25-p75 ms | ratio | peak MiB | mem ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        scale = "-" if r["scale"] is None else (f"x{r['scale'][0]:g}" if r["scale"][0] == r["scale"][1]
                                                else f"x{r['scale'][0]:g}/{r['scale'][1]:g}")
        mem = "-" if r["peak_mem_bytes"] is None else f"{r['peak_mem_bytes'] / 2**20:.1f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        mratio = "-" if r.get("mem_ratio") is None else f"{r['mem_ratio']:.3f}"
        shape = "x".join(str(v) for v in r["input_shape"]) if r["input_shape"] else "-"
        lines.append(f"| {r['model']} | {r['width']:g} | {scale} | {shape} | {r['median_ms']:.2f} | "
                     f"{r['p25_ms']:.2f}-{r['p75_ms']:.2f} | {ratio} | {mem} | {mratio} |")
    return "\n".join(lines)


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2)


# ---------------------------------------------------------------------------
# fine-tune step: AnySR (Algorithm 1) vs the vanilla model's training step


def _synthetic_images(n: int, size: int, seed: int = 0) -> list:
    """Smooth random HR images (low-frequency noise upsampled): data only the cost depends on."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g)
    imgs = torch.nn.functional.interpolate(base, size=(size, size), mode="bicubic", align_corners=False)
    return list(imgs.clamp(0, 1))


def _module_key(root: nn.Module, part: nn.Module) -> str:
    """FlopCounterMode's name of ``part`` (``"<RootClass>.<path>"``; the root: ``"Global"``)."""
    if part is root:
        return "Global"
    for name, m in root.named_modules():
        if m is part:
            return f"{type(root).__name__}.{name}"
    raise ValueError("part is not a sub-module of root")  # pragma: no cover - internal


def _encoder_of(model: nn.Module) -> nn.Module:
    """The encoder, as the model's method adapter names it (its block root)."""
    return adapter_for(model).block_root(unwrap(model))


def finetune_step_report(original: nn.Module, variants: dict, batch: int = 16, patch: int = 48,
                         sample_q: int | None = 2304, device="cpu", warmup: int = 1, repeats: int = 5,
                         memory_steps: int = 3, threads: Optional[int] = None, clock: str = "wall",
                         seed: int = 0, image_size: int | None = None, progress: bool = False) -> dict:
    """One training step (forward, L1 loss, backward, Adam) of ``original`` (plain training,
    scale U[1, 4] per sample) and of each AnySR model in ``variants`` (``{name: model}``,
    Algorithm 1 as its config says), side by side in one process.

    * time: interleaved rounds (each round runs one step of every candidate, rotated order),
      ``warmup`` untimed, median and quartiles of ``repeats``; batches are made beforehand;
    * peak memory: ``memory_steps`` further steps per candidate (peak above the level before
      the step: activations, gradients, temporaries; median over the steps);
    * MACs (FlopCounterMode, forward + backward): counted on the same memory steps, whole
      model and encoder (the adapter's block root); and, for the AnySR models, the expected
      encoder MACs of a step under the config's width mix, from per-width counts on one sample
      (the grouped path's cost is the sum over samples; the masked path's is not, so its
      expectation is its counted full-size cost).
    Widths drawn in the timed steps are reported, so every figure can be checked.
    """
    from torch.utils.flop_counter import FlopCounterMode


    device = torch.device(device)
    if threads is not None:
        torch.set_num_threads(int(threads))
    timer = CLOCKS[clock]
    image_size = image_size or max(patch * 4 + 8, 64)
    images = _synthetic_images(4, image_size, seed)
    steps = warmup + repeats + memory_steps
    cfg = TrainConfig(patch=patch, batch_size=batch, sample_q=sample_q, steps=10 ** 9, lr=1e-5, progress=False,
                      seed=seed, device=str(device), augment=False)
    cands = {"vanilla": original, **variants}
    trainers, cached = {}, {}
    for name, model in cands.items():
        t = Trainer(model.to(device), images, cfg)
        cached[name] = [t.batch(s) for s in range(steps)]
        t.batch = (lambda step, _c=cached[name]: _c[step])  # data preparation is not timed
        trainers[name] = t
    times = {n: [] for n in cands}
    widths = {n: [] for n in cands}
    total = warmup + repeats
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total * len(cands) + memory_steps * len(cands), desc="finetune step", unit="step")
    names = list(cands)
    for r in range(total):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            _sync(device)
            t0 = timer()
            rec = trainers[name].train_step(r)
            _sync(device)
            dt = timer() - t0
            if r >= warmup:
                times[name].append(dt * 1e3)
                widths[name].append(rec.get("widths"))
            if bar is not None:
                bar.update(1)
    peaks, macs, enc_macs = {n: [] for n in cands}, {n: [] for n in cands}, {n: [] for n in cands}
    mem_widths = {n: [] for n in cands}
    for name in names:
        model = unwrap(cands[name])
        enc_key = _module_key(model, _encoder_of(model))
        for s in range(total, steps):
            counter = FlopCounterMode(display=False)
            recs = []
            with counter:
                peaks[name].append(peak_memory(lambda: recs.append(trainers[name].train_step(s)), device))
            mem_widths[name].append(recs[0].get("widths"))
            counts = counter.get_flop_counts()
            macs[name].append(counter.get_total_flops() // 2)
            enc_macs[name].append(sum(counts.get(enc_key, {}).values()) // 2)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    # expected encoder MACs per step under Algorithm 1's width mix, from one-sample counts
    expected = {}
    one = TrainConfig(**{**cfg.to_dict(), "batch_size": 1})
    for name, model in cands.items():
        if name == "vanilla" or not _blocks(model):
            continue
        state = get_state(model)
        conf = state.config
        if conf.mixed_path == "masked" or conf.compat is not None:
            continue
        twin = _copy_for_counting(model)
        t = Trainer(twin, images, one)
        per_width = {}
        key = _module_key(unwrap(twin), _encoder_of(twin))
        for w in conf.widths:
            counter = FlopCounterMode(display=False)
            with use_width(twin, w), counter:
                t.train_step(0)
            per_width[w] = sum(counter.get_flop_counts().get(key, {}).values()) // 2
        T, p = len(conf.widths), conf.reset_prob
        prob = {w: (1 - p) / T for w in conf.widths[:-1]}
        prob[conf.widths[-1]] = 1 / T + (T - 1) / T * p
        expected[name] = {"per_sample_encoder_macs": {str(w): v for w, v in per_width.items()},
                          "width_prob": {str(w): v for w, v in prob.items()},
                          "expected_encoder_macs_per_step": batch * sum(prob[w] * per_width[w] for w in prob)}
    van_t = statistics.median(times["vanilla"])
    van_m = statistics.median(peaks["vanilla"])
    van_e = statistics.mean(enc_macs["vanilla"])
    van_w = statistics.mean(macs["vanilla"])
    results = []
    for name in names:
        med = statistics.median(times[name])
        p25, p75 = _quantiles(times[name])
        e = statistics.mean(enc_macs[name])
        row = {"name": name, "median_ms": med, "p25_ms": p25, "p75_ms": p75, "time_ratio": med / van_t,
               "peak_mem_bytes": statistics.median(peaks[name]), "peak_mem_max_bytes": max(peaks[name]),
               "mem_ratio": statistics.median(peaks[name]) / van_m,
               "encoder_macs_counted": e, "encoder_mac_ratio_counted": e / van_e,
               "model_macs_counted": statistics.mean(macs[name]),
               "model_mac_ratio_counted": statistics.mean(macs[name]) / van_w,
               "widths_timed_steps": widths[name] if name != "vanilla" else None,
               "widths_memory_steps": mem_widths[name] if name != "vanilla" else None}
        if name in expected:
            row.update(expected[name])
            row["encoder_mac_ratio_expected"] = expected[name]["expected_encoder_macs_per_step"] / van_e
            per = {float(w): v for w, v in expected[name]["per_sample_encoder_macs"].items()}
            drawn = [sum(per[w] for w in (ws if len(ws) == batch else ws * batch)) for ws in widths[name] if ws]
            if drawn:  # the timed steps' own width draws, at the per-sample counts (grouped: a sum)
                row["encoder_mac_ratio_timed_steps"] = statistics.mean(drawn) / van_e
        if name != "vanilla":
            conf = get_state(cands[name]).config
            row.update(reset=conf.reset, mixed_path=conf.mixed_path, reset_prob=conf.reset_prob)
        results.append(row)
    return {"device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "clock": clock, "warmup": warmup, "repeats": repeats,
            "memory_steps": memory_steps, "batch": batch, "patch": patch, "sample_q": sample_q,
            "results": results}


def _copy_for_counting(model: nn.Module) -> nn.Module:
    return safe_deepcopy(unwrap(model))


def format_finetune_markdown(report: dict) -> str:
    lines = [f"device: {report['device']} ({report.get('cpu', '')}), torch {report['torch']}, "
             f"{report['threads']} threads, {report['clock']} clock; batch {report['batch']}, LR patch "
             f"{report['patch']}, {report['sample_q']} queries/sample; {report['warmup']} warm-up + "
             f"{report['repeats']} interleaved timed steps, {report['memory_steps']} memory/MAC steps",
             "",
             "| step | reset | mixed path | median ms | p25-p75 ms | time ratio | peak MiB | mem ratio | "
             "encoder GMACs (counted) | encoder ratio (counted) | encoder ratio (timed steps) | "
             "encoder ratio (expected) | whole-model ratio (counted) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        exp = r.get("encoder_mac_ratio_expected")
        timed = r.get("encoder_mac_ratio_timed_steps")
        lines.append(f"| {r['name']} | {r.get('reset', '-')} | {r.get('mixed_path', '-')} | {r['median_ms']:.0f} | "
                     f"{r['p25_ms']:.0f}-{r['p75_ms']:.0f} | {r['time_ratio']:.3f} | "
                     f"{r['peak_mem_bytes'] / 2**20:.0f} | {r['mem_ratio']:.3f} | "
                     f"{r['encoder_macs_counted'] / 1e9:.1f} | {r['encoder_mac_ratio_counted']:.3f} | "
                     f"{'-' if timed is None else f'{timed:.3f}'} | "
                     f"{'-' if exp is None else f'{exp:.3f}'} | {r['model_mac_ratio_counted']:.3f} |")
    lines += ["", "counted: FlopCounterMode over the memory steps (forward + backward); timed steps: the widths "
              "the timed steps drew, at per-sample counts; expected: over the config's width distribution "
              "(group uniform, reset p); the grouped path's cost is the sum of its samples' costs."]
    return "\n".join(lines)
