"""Our own Algorithm-1 fine-tune trainer (single process or DDP through ``torchrun``).

One step (paper Algorithm 1, applied per sample as upstream pipelines draw a scale per
sample; ``AnySRConfig(reset="batch")``: once per iteration, as Algorithm 1 is written):

1. draw a group ``t`` uniformly from ``1..T`` (per sample; per batch with ``reset="batch"``)
   and a scale uniformly in ``S_t`` per sample (``scale_groups``; symmetric by default,
   independent ``s_h``/``s_w`` with ``asymmetric=True``);
2. reset ``t <- T`` with probability ``p``.  This is done **once**, by the AnySR model's
   own hooks in ``train()`` mode (``control.decide_widths``), from the model's seedable
   generator, which the trainer re-seeds every step from ``(seed, step, rank)``; with
   ``reset="batch"`` the whole batch shares one draw, so every batch runs one width;
3. one forward with the per-sample sub-network, L1 loss, Adam step.

The trainer tells the model each sample's scale with ``use_scale(model, (B, 2) tensor)``
(the same value the adapter would read from ``cell``: ``H_hr / H_lr``), so it works with
or without a method adapter.  Plain (not anysrified) models are trained the upstream way
(scale uniform in ``[scale_min, scale_max]``): that is how the demo "pretrains".

Data: a folder of HR images (or a list of tensors); each sample is a random HR crop of
``round(patch * s)`` pixels, flipped / transposed at random, its LR the PIL bicubic
resize to ``patch`` (LIIF's ``sr-implicit-downsampled``); queries are ``sample_q`` random
HR pixels (LIIF, ``(B, Q, 2)``) or a ``patch x patch`` random subset of them (SRNO,
``(B, H, W, 2)``).  Inputs and targets are normalised by ``(x - 0.5) / 0.5``.

Schedule: the paper's by default (Adam, lr 1e-5 halved every 200 epochs, 500 epochs);
``epochs``, ``steps``, ``lr``, ``lr_step_epochs`` override it.  An epoch is
``ceil(len(images) * repeat / (batch_size * world_size))`` steps.

Reproducibility and resume: every random draw of step ``k`` on rank ``r`` comes from a
generator seeded by ``(seed, k, r)`` (epoch permutations from ``(seed, epoch)``, equal on
all ranks, then sharded by rank), so a run resumed from its last checkpoint equals the
uninterrupted run bit for bit on CPU.  Checkpoints (``last.pt``) are written atomically
every ``save_every`` steps (default: once per epoch) and at the end; an interrupted run
loses at most the current interval.

DDP: ``torchrun --nproc_per_node N -m anysr_plugin.cli finetune ...`` (or ``anysr
finetune``): gloo on CPU, nccl on CUDA; the model is seeded identically on all ranks and
DDP broadcasts rank 0's weights; only rank 0 writes checkpoints and shows progress.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.checkpoint import atomic_save, fit_problems, load_file
from ..runtime.config import SEED_MAX
from ..runtime.control import anysr_blocks, get_state, unwrap, use_scale
from ..runtime.errors import CheckpointError, ConfigError, RunMismatchError, TrainingDivergedError, shorten
from ..runtime.limits import INT64_MAX, to_float
from ..runtime.methods import adapter_for
from ..runtime.plan import active_plan
from .data import ImageFolder, load_image
from .imresize import resize_pil
from .reference.models import make_coord
from .runlock import run_folder_lock

PAPER_SCALE_GROUPS = ((1.1, 1.7), (1.8, 2.5), (2.6, 3.2), (3.3, 4.0))
CHECKPOINT_NAME = "last.pt"
#: TrainConfig fields a resumed run may change: how long it trains, how often it saves or logs, where
#: it runs; every other field shapes the data, the schedule or the random draws and must match
RESUME_MAY_CHANGE = ("epochs", "steps", "save_every", "log_every", "device", "progress")


@dataclass
class TrainConfig:
    """Every knob of :class:`Trainer` (defaults: the paper's LIIF fine-tune)."""

    patch: int = 48                  # LR patch (48 LIIF, 50 Meta-SR/ArbSR, 128 SRNO)
    batch_size: int = 16
    sample_q: int | None = 2304      # LIIF query count per sample (None: all HR pixels)
    repeat: int = 20                 # dataset repeats per epoch (as LIIF's image-folder)
    epochs: int = 500
    steps: int | None = None         # total steps; overrides epochs * steps_per_epoch
    lr: float = 1e-5
    lr_step_epochs: int = 200        # halve the lr every this many epochs
    lr_gamma: float = 0.5
    scale_groups: tuple = PAPER_SCALE_GROUPS
    asymmetric: bool = False
    scale_min: float = 1.0           # plain (not anysrified) models: uniform scale range
    scale_max: float = 4.0
    augment: bool = True
    layout: str = "auto"             # "points" (LIIF, (B,Q,2)), "grid" (SRNO, (B,H,W,2)), "auto"
    seed: int = 0
    save_every: int | None = None    # steps between checkpoints (None: one epoch)
    log_every: int = 10
    device: str = "cpu"
    progress: bool = True
    grad_clip: float | None = None

    def __post_init__(self):
        for name in ("patch", "batch_size", "repeat", "epochs", "lr_step_epochs", "seed", "sample_q", "steps",
                     "save_every", "log_every"):
            value = getattr(self, name)
            if value is None and name in ("sample_q", "steps", "save_every"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"TrainConfig.{name} must be an integer, got {shorten(value)}")
            if abs(value) > (SEED_MAX if name == "seed" else INT64_MAX):  # torch takes no larger count or seed
                raise ConfigError(f"TrainConfig.{name}={shorten(value)} is out of range (at most "
                                  f"{SEED_MAX if name == 'seed' else INT64_MAX})")
        if self.seed < 0:  # numpy's SeedSequence draws every step's randomness; it takes no negative seed
            raise ConfigError(f"TrainConfig.seed must be >= 0, got {self.seed}")
        for name in ("lr", "lr_gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(to_float(value, ConfigError, f"TrainConfig.{name}")):
                raise ConfigError(f"TrainConfig.{name} must be a finite number, got {shorten(value)}")
        if self.sample_q is not None and self.sample_q < 1:
            raise ConfigError(f"sample_q must be >= 1 (or None for every HR pixel), got {self.sample_q}")
        if self.save_every is not None and self.save_every < 1:
            raise ConfigError(f"save_every must be >= 1 (or None for once an epoch), got {self.save_every}")
        if self.patch < 2 or self.batch_size < 1:
            raise ConfigError(f"patch ({self.patch}) must be >= 2 and batch_size ({self.batch_size}) >= 1")
        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")
        if self.epochs < 0 or self.repeat < 1 or self.lr_step_epochs < 1:
            raise ConfigError("epochs must be >= 0, repeat >= 1 and lr_step_epochs >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        groups = tuple(tuple(to_float(v, ConfigError, "TrainConfig.scale_groups entry") for v in g)
                       for g in self.scale_groups)
        if not groups or any(len(g) != 2 or not (1.0 <= g[0] <= g[1]) for g in groups):
            raise ConfigError(f"scale_groups must be (low, high) pairs with 1 <= low <= high; got "
                              f"{shorten(self.scale_groups)}")
        self.scale_groups = groups
        if not 1.0 <= self.scale_min <= self.scale_max:
            raise ConfigError(f"need 1 <= scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if self.layout not in ("auto", "points", "grid"):
            raise ConfigError(f"layout must be 'auto', 'points' or 'grid', got {shorten(self.layout)}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["scale_groups"] = [list(g) for g in self.scale_groups]
        return d


# ----------------------------------------------------------------------------- data


def load_hr_images(source) -> list:
    """HR images as a list of (3, H, W) float tensors from a folder, a list of paths or tensors."""
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_dir():
            raise ConfigError(f"training folder {str(source)!r} does not exist")
        images = [img for _, img in ImageFolder(source)]
    else:
        images = [load_image(x) if isinstance(x, (str, os.PathLike)) else x for x in source]
    if not images:
        raise ConfigError(f"no training images found in {source!r}")
    for i, img in enumerate(images):
        if not (isinstance(img, torch.Tensor) and img.dim() == 3 and img.shape[0] == 3 and img.is_floating_point()):
            what = f"{img.dtype} tensor of shape {tuple(img.shape)}" if isinstance(img, torch.Tensor) else \
                type(img).__name__
            raise ConfigError(f"training image {i} is a {what}; give (3, H, W) float tensors in [0, 1] or image paths")
    return images


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _augment(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    hflip, vflip, dflip = (rng.random(3) < 0.5).tolist()
    if hflip:
        img = img.flip(-1)
    if vflip:
        img = img.flip(-2)
    if dflip:
        img = img.transpose(-2, -1)
    return img


def make_sample(hr: torch.Tensor, scale: tuple, patch: int, rng: np.random.Generator, augment: bool,
                layout: str, sample_q: int | None):
    """One training sample (LIIF's sr-implicit-downsampled): inp, coord, cell, gt, effective scale."""
    sh, sw = scale
    hh, ww = round(patch * sh), round(patch * sw)
    H, W = hr.shape[-2:]
    if hh > H or ww > W:
        raise ConfigError(f"an HR image of {H}x{W} is smaller than the {hh}x{ww} crop that patch {patch} "
                          f"at scale {max(sh, sw):.2f} needs; use a smaller patch or larger images")
    y = int(rng.integers(0, H - hh + 1))
    x = int(rng.integers(0, W - ww + 1))
    crop = hr[:, y:y + hh, x:x + ww]
    if augment:
        crop = _augment(crop, rng)
        hh, ww = crop.shape[-2:]
    lr = resize_pil(crop, (patch, patch))
    coord = make_coord((hh, ww))
    gt = crop.reshape(3, -1).t()
    cell = torch.tensor([2.0 / hh, 2.0 / ww])
    if layout == "grid":
        idx = torch.from_numpy(rng.permutation(hh * ww)[:patch * patch])
        coord = coord[idx].view(patch, patch, 2)
        gt = gt[idx].view(patch, patch, 3).permute(2, 0, 1)
    elif sample_q is not None:
        idx = torch.from_numpy(rng.choice(hh * ww, size=min(sample_q, hh * ww), replace=False))
        coord, gt = coord[idx], gt[idx]
        cell = cell.expand(len(idx), 2)
    else:
        cell = cell.expand(coord.shape[0], 2)
    return lr, coord, cell, gt, (hh / patch, ww / patch)


# ----------------------------------------------------------------------------- distributed


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)


# ----------------------------------------------------------------------------- trainer


def _is_anysr(model: nn.Module) -> bool:
    return bool(anysr_blocks(model))


def _layout_of(model: nn.Module) -> str:
    """The query layout of the model's SR call, as its method adapter says (``layout="auto"``)."""
    adapter = adapter_for(model)
    layout = adapter.query_layout(unwrap(model))
    if layout is None:
        raise ConfigError(f"{type(unwrap(model)).__name__}: its adapter {adapter.name!r} knows no call "
                          "model(inp, coord, cell) for the trainer to drive; give TrainConfig(layout='points') "
                          "(coord (B, Q, 2)) or 'grid' (coord (B, H, W, 2)) if the model takes one")
    return layout


class Trainer:
    """Algorithm-1 fine-tuning of an anysrified model (or plain training of an original one).

    ``Trainer(model, images, TrainConfig(...), out_dir).run()``; ``history`` holds per-step
    records (``loss``, ``lr``, and for AnySR models ``groups``, ``widths``, ``scales``).
    """

    def __init__(self, model: nn.Module, images, config: TrainConfig | None = None,
                 out_dir: str | os.PathLike | None = None, dist_info: DistInfo | None = None,
                 record: bool = False, callback: Callable | None = None, run_info: dict | None = None):
        self.cfg = config or TrainConfig()
        self.run_info = run_info  # what built the model (e.g. the CLI's --model / --model-arg), saved and compared
        self.images = load_hr_images(images)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.dist = dist_info or DistInfo()
        self.device = torch.device(self.cfg.device)
        self.model = model.to(self.device)
        self.anysr = _is_anysr(model)
        self.layout = _layout_of(model) if self.cfg.layout == "auto" else self.cfg.layout
        self.record = record
        self.callback = callback
        self.history: list = []
        if self.anysr:
            self.state = get_state(model)
            widths = self.state.config.widths
            if len(self.cfg.scale_groups) != len(widths):
                raise ConfigError(f"{len(self.cfg.scale_groups)} scale groups for {len(widths)} widths "
                                  f"{widths}: give one (low, high) range per width")
            for t, (lo, hi) in enumerate(self.cfg.scale_groups):
                for s in (lo, hi):
                    if self.state.config.width_for_scale(s) != widths[t]:
                        raise ConfigError(
                            f"scale group {t + 1} ({lo}-{hi}) is not inside the config's width bounds "
                            f"{self.state.config.scale_bounds}: scale {s} maps to width "
                            f"{self.state.config.width_for_scale(s)}, not {widths[t]}")
        top = max(hi for _, hi in self.cfg.scale_groups) if self.anysr else self.cfg.scale_max
        need = round(self.cfg.patch * top)  # the largest HR crop a sample can draw (checked now, not mid-run)
        small = [tuple(im.shape[-2:]) for im in self.images if min(im.shape[-2:]) < need]
        if small:
            raise ConfigError(f"{len(small)} of {len(self.images)} training images (e.g. {small[0][0]}x{small[0][1]}) "
                              f"are smaller than the {need}x{need} crop that patch {self.cfg.patch} at scale {top:g} "
                              "needs; use a smaller patch or larger images")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=self.cfg.lr)
        self.net = model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(model, device_ids=ids)
        n = len(self.images) * self.cfg.repeat
        self.steps_per_epoch = max(1, math.ceil(n / (self.cfg.batch_size * self.dist.world)))
        self.total_steps = self.cfg.steps if self.cfg.steps is not None else self.cfg.epochs * self.steps_per_epoch
        self.save_every = self.cfg.save_every or self.steps_per_epoch
        self.step = 0
        self._saved_step: int | None = None  # step of the checkpoint on disk (None: none written or resumed)
        self._perm_cache: dict = {}

    # -- schedule ------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        epoch = step // self.steps_per_epoch
        return self.cfg.lr * self.cfg.lr_gamma ** (epoch // self.cfg.lr_step_epochs)

    # -- data ----------------------------------------------------------------
    def _image_index(self, step: int, j: int) -> int:
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: _rng(self.cfg.seed, 1, epoch).permutation(
                len(self.images) * self.cfg.repeat) % len(self.images)}
        perm = self._perm_cache[epoch]
        pos = (within * self.dist.world + self.dist.rank) * self.cfg.batch_size + j
        return int(perm[pos % len(perm)])

    def draw_scale(self, rng: np.random.Generator, group: int | None = None):
        """(group index or None, (s_h, s_w)) for one sample (Algorithm 1 lines 2-3);
        ``group`` fixes the group (one group per batch)."""
        cfg = self.cfg
        if not self.anysr:
            lo, hi, t = cfg.scale_min, cfg.scale_max, None
        else:
            t = int(rng.integers(0, len(cfg.scale_groups))) if group is None else group
            lo, hi = cfg.scale_groups[t]
        sh = float(rng.uniform(lo, hi))
        sw = float(rng.uniform(lo, hi)) if cfg.asymmetric else sh
        return t, (sh, sw)

    def batch(self, step: int):
        rng = _rng(self.cfg.seed, 2, step, self.dist.rank)
        inps, coords, cells, gts, scales, groups = [], [], [], [], [], []
        # reset="batch" is Algorithm 1 as written: one group (and one reset) per iteration
        one = (int(rng.integers(0, len(self.cfg.scale_groups)))
               if self.anysr and self.state.config.reset == "batch" else None)
        for j in range(self.cfg.batch_size):
            hr = self.images[self._image_index(step, j)]
            t, scale = self.draw_scale(rng, one)
            lr, coord, cell, gt, eff = make_sample(hr, scale, self.cfg.patch, rng, self.cfg.augment, self.layout,
                                                   self.cfg.sample_q)
            inps.append(lr); coords.append(coord); cells.append(cell); gts.append(gt)
            scales.append(eff); groups.append(t)
        if self.layout == "points" and len({c.shape[0] for c in coords}) > 1:
            q = min(c.shape[0] for c in coords)  # sample_q larger than some crop: keep a common count
            coords, cells, gts = [c[:q] for c in coords], [c[:q] for c in cells], [g[:q] for g in gts]
        dev = self.device
        return ((torch.stack(inps).to(dev) - 0.5) / 0.5, torch.stack(coords).to(dev), torch.stack(cells).to(dev),
                (torch.stack(gts).to(dev) - 0.5) / 0.5, torch.tensor(scales, dtype=torch.float32), groups)

    # -- one step --------------------------------------------------------------
    def train_step(self, step: int) -> dict:
        self.net.train()
        inp, coord, cell, gt, scales, groups = self.batch(step)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(step)
        seen = {}
        ctx = contextlib.nullcontext()
        hook = None
        if self.anysr:
            # Algorithm 1 line 4 (reset with probability p) happens once per sample inside the
            # model's hooks, from its generator; seeded per (seed, step, rank) for exact resume
            self.state.generator.manual_seed(int(_rng(self.cfg.seed, 3, step, self.dist.rank).integers(0, 2**62)))
            ctx = use_scale(self.model, scales)

            first = anysr_blocks(self.model)[0]

            def _peek(module, args):  # read-only: which widths the hooks chose for this call

                plan = active_plan(module._anysr_state)
                if plan is not None and "widths" not in seen:
                    seen["widths"] = list(plan[1])
            hook = first.register_forward_pre_hook(_peek)
        try:
            with ctx:
                pred = self.net(inp, coord, cell)
        finally:
            if hook is not None:
                hook.remove()
        loss = F.l1_loss(pred, gt)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        # after backward, so every DDP rank sees the same (all-reduced) gradients and stops together
        self._require_finite(step, loss, [p.grad for p in self.params if p.grad is not None], "gradients")
        self.optimizer.step()
        self._require_finite(step, None, self.params, "weights")
        rec = {"step": step, "loss": float(loss.detach()), "lr": self.optimizer.param_groups[0]["lr"]}
        if self.anysr:
            widths = seen.get("widths", [])
            if len(widths) == 1:
                widths = widths * len(groups)
            rec.update(groups=groups, widths=widths, scales=scales.tolist())
        return rec

    def _require_finite(self, step: int, loss, tensors: list, what: str) -> None:
        """TrainingDivergedError (before anything is saved) on a non-finite loss or tensor.  Under DDP
        only the all-reduced gradients and the weights decide (equal on every rank, so all stop)."""
        loss_ok = loss is None or bool(torch.isfinite(loss.detach()).all())
        tensors_ok = not tensors or bool(torch.isfinite(torch.stack(torch._foreach_norm(
            [t.detach() for t in tensors]))).all())
        if tensors_ok and (loss_ok or self.dist.world > 1):
            return
        bad = f"the loss is {float(loss.detach()):g}" if not loss_ok else f"the {what} hold inf or nan"
        kept = (f"the last good checkpoint {self.checkpoint_path} (step {self._saved_step}) is kept"
                if self._saved_step is not None else "no checkpoint of this run was written")
        raise TrainingDivergedError(f"training diverged at step {step} (lr {self.lr_at(step):g}): {bad}; stopped "
                                    f"and {kept}; lower the learning rate (or set grad_clip) and rerun")

    # -- checkpoints ------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    def state_dict(self) -> dict:
        d = {"kind": "anysr_plugin.finetune", "step": self.step, "epoch": self.step // self.steps_per_epoch,
             "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
             "train_config": self.cfg.to_dict(), "world": self.dist.world, "images": len(self.images)}
        if self.run_info is not None:
            d["run"] = dict(self.run_info)
        if self.anysr:
            d["anysr_config"] = self.state.config.to_dict()
        return d

    def save(self) -> Path | None:
        if self.checkpoint_path is None or not self.dist.main:
            return None

        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = atomic_save(self.state_dict(), self.checkpoint_path)
        self._saved_step = self.step
        return path

    def resume_mismatch(self, ckpt: dict) -> list:
        """``"field: run X, now Y"`` for every setting in which checkpoint `ckpt` differs from this
        trainer (model, AnySR config, training config, weights' shapes); empty when it may resume."""
        diffs = []
        saved_run, now_run = ckpt.get("run"), self.run_info
        if isinstance(saved_run, dict) and now_run is not None:
            diffs += [f"{k}: run {saved_run.get(k)!r}, now {now_run.get(k)!r}"
                      for k in sorted(set(saved_run) | set(now_run)) if saved_run.get(k) != now_run.get(k)]
        saved_a = ckpt.get("anysr_config")
        now_a = self.state.config.to_dict() if self.anysr else None
        if (saved_a is None) != (now_a is None):
            diffs.append(f"AnySR: run {'AnySR' if saved_a else 'plain (no AnySR)'}, "
                         f"now {'AnySR' if now_a else 'plain (no AnySR)'}")
        elif now_a is not None:
            diffs += [f"anysr.{k}: run {saved_a.get(k)!r}, now {v!r}" for k, v in now_a.items() if saved_a.get(k) != v]
        if "images" in ckpt and ckpt["images"] != len(self.images):
            diffs.append(f"training images: run {ckpt['images']}, now {len(self.images)}")
        saved_t, now_t = ckpt.get("train_config") or {}, self.cfg.to_dict()
        diffs += [f"train.{k}: run {saved_t[k]!r}, now {v!r}" for k, v in now_t.items()
                  if k not in RESUME_MAY_CHANGE and k in saved_t and saved_t[k] != v]
        problems = fit_problems(self.model, ckpt.get("model") or {})
        if problems:
            diffs.append(f"model weights: {problems}")
        return diffs

    def resume(self, path: str | os.PathLike | None = None) -> bool:
        """Load ``path`` (default ``out_dir/last.pt``); False when there is nothing to resume."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None or not path.exists():
            return False
        ckpt = load_file(path)
        if not isinstance(ckpt, dict) or ckpt.get("kind") != "anysr_plugin.finetune":
            raise CheckpointError(f"{path} is not an anysr finetune checkpoint (no kind='anysr_plugin.finetune')")
        if ckpt.get("world", 1) != self.dist.world:
            raise CheckpointError(f"{path} was written by a {ckpt.get('world')}-process run; resume it with "
                                  f"the same number of processes (now {self.dist.world}) to keep the data order")
        diffs = self.resume_mismatch(ckpt)
        if diffs:
            raise RunMismatchError(f"{path} belongs to a run trained with other settings, so it cannot resume "
                                   f"under these ({'; '.join(diffs)}); rerun with the run's settings to continue it, "
                                   "or give another output folder for a new run")
        self.model.load_state_dict(ckpt["model"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step = int(ckpt["step"])
        self._saved_step = self.step
        return True

    # -- loop ---------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> list:
        """Train to ``total_steps`` (or stop after ``stop_after`` more steps, for tests)."""
        from tqdm.auto import tqdm

        end = self.total_steps if stop_after is None else min(self.total_steps, self.step + stop_after)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.cfg.progress and self.dist.main),
                   desc="finetune" if self.anysr else "train", unit="step", dynamic_ncols=True)
        t0, n0, running = time.perf_counter(), self.step, None
        try:
            while self.step < end:
                rec = self.train_step(self.step)
                self.step += 1
                running = rec["loss"] if running is None else 0.9 * running + 0.1 * rec["loss"]
                if self.record:
                    self.history.append(rec)
                if self.callback is not None:
                    self.callback(self, rec)
                bar.update(1)
                if self.step % max(1, self.cfg.log_every) == 0 or self.step == end:
                    rate = (self.step - n0) * self.cfg.batch_size * self.dist.world / max(1e-9, time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{running:.4f}", lr=f"{rec['lr']:.1e}", img_s=f"{rate:.1f}")
                if self.step % self.save_every == 0 or self.step == self.total_steps:
                    self.save()
        finally:
            bar.close()
        return self.history


def finetune(model: nn.Module, images, out_dir=None, resume: bool = True, record: bool = False,
             **config) -> Trainer:
    """Fine-tune ``model`` (Algorithm 1 if it is anysrified) on ``images``; returns the Trainer."""
    cfg = TrainConfig(**config)
    trainer = Trainer(model, images, cfg, out_dir, dist_info=init_distributed(cfg.device), record=record)
    writes = out_dir is not None and trainer.dist.main
    with run_folder_lock(out_dir, "anysr_plugin.train.finetune") if writes else contextlib.nullcontext():
        if resume:
            trainer.resume()
        trainer.run()
    return trainer


def sampling_statistics(history: Sequence[dict], widths: Sequence[float]) -> dict:
    """Group frequencies, reset rate and width frequencies over recorded steps."""
    groups = [g for r in history for g in r.get("groups", [])]
    ws = [w for r in history for w in r.get("widths", [])]
    T = len(widths)
    n = max(1, len(groups))
    group_freq = [sum(1 for g in groups if g == t) / n for t in range(T)]
    # a reset is a sample of a group below T that ran the full network
    below = [(g, w) for g, w in zip(groups, ws) if g is not None and g < T - 1]
    reset_rate = sum(1 for g, w in below if w == widths[-1]) / max(1, len(below))
    width_freq = {w: sum(1 for x in ws if x == w) / max(1, len(ws)) for w in widths}
    return {"samples": len(groups), "group_freq": group_freq, "reset_rate": reset_rate, "width_freq": width_freq}


__all__ = ["TrainConfig", "Trainer", "finetune", "make_sample", "load_hr_images", "init_distributed",
           "DistInfo", "sampling_statistics", "PAPER_SCALE_GROUPS"]
