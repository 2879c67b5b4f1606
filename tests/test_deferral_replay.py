"""Deferred features wait for their own query, every iteration.

A trainer loop is replayed on an op-dispatched look-alike (``forward(op, inp=None, feat=None,
coord=None, cell=None)``: ``model('gen_feat', inp=...)`` then ``model('query_rgb', feat=...,
coord=..., cell=...)``) inside ``defer_features``, as ``anysr launch`` runs it: 8 iterations with
changing batch sizes and scales, a validation pass in between, a ``torch.no_grad`` iteration, a
feature op called twice before its query and a smaller last batch.  What each sample really ran
is recorded from the convolutions themselves (``ConvWidths``: a TorchFunctionMode that maps the
rows every convolution of a converted block reads back to the samples of the block's input, and
records the filters it used), never from the plan; the features the query used are also
compared with the encoder run alone under ``use_scale`` (calling the encoder
directly leaves the deferral's bookkeeping alone), so the gates saw the batch's own scales too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import anysr_plugin as anysr
from anysr_plugin.adapters.structure import defer_features
from anysr_plugin.errors import AnySRError

from conftest import randomize_gates, tiny_edsr

LR = 8
#: the paper's groups on max(s_h, s_w): <= 1.75 -> 0.5, <= 2.55 -> 0.7, <= 3.25 -> 0.9, else 1.0;
#: floor(16 w) filters of the 16-channel look-alike (an independent table, not the config's code)
CHANNELS = {1.25: 8, 1.5: 8, 2.0: 11, 2.5: 11, 3.0: 14, 3.5: 16, 4.0: 16}

#: (label, scales of the batch, what happens); the validation runs between iterations 3 and 4
LOOP = [
    ("it0", [1.25, 2.0, 3.0, 4.0], "train"),
    ("it1", [4.0, 3.0, 2.0, 1.25], "train"),             # same size, other scales
    ("it2", [2.5, 3.5], "train"),                          # smaller batch
    ("it3", [3.0, 3.0, 1.25], "train, feature op twice"),  # larger again
    ("val", [3.0], "eval, no_grad, chunked queries"),
    ("it4", [1.5, 4.0], "train"),
    ("it5", [2.0, 2.0, 3.5], "no_grad"),
    ("it6", [4.0, 3.0, 2.0, 1.25], "train"),
    ("it7", [2.5], "train, last smaller batch"),
]


class OpIIF(nn.Module):
    """forward(op, ...) dispatching to gen_feat / query_rgb (LIIF-like call contract)."""

    def __init__(self):
        super().__init__()
        self.encoder = tiny_edsr()
        self.imnet = nn.Linear(16 + 4, 3)

    def gen_feat(self, inp):
        self.feat = self.encoder(inp)
        return self.feat

    def query_rgb(self, feat, coord, cell):
        grid = coord.flip(-1).unsqueeze(1)
        q = F.grid_sample(feat, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        rel = cell * torch.tensor([float(feat.shape[-2]), float(feat.shape[-1])])
        return self.imnet(torch.cat([q, coord, rel], dim=-1))

    def forward(self, op, inp=None, feat=None, coord=None, cell=None):
        if op == "gen_feat":
            return self.gen_feat(inp)
        if op == "query_rgb":
            return self.query_rgb(feat, coord, cell)
        return self.query_rgb(self.gen_feat(inp), coord, cell)


class ConvWidths(TorchFunctionMode):
    """Per sample, the filters of the convolution each converted block ran on that sample's rows.

    A pre-hook on each converted block (found by its upstream path) keeps the block's input; a
    convolution inside the block whose input rows are rows of that input (the whole batch, or a
    width group's sub-batch) records ``weight.shape[0]`` for those samples."""

    def __init__(self, model, paths):
        super().__init__()
        self.runs, self.current, self.on = [], None, True
        for path in paths:
            block = model.get_submodule(path)
            block.register_forward_pre_hook(self._enter)
            block.register_forward_hook(self._leave)

    def _enter(self, block, args):
        if self.on:
            self.current = args[0]
            self.runs.append([None] * args[0].shape[0])

    def _leave(self, block, args, out):
        self.current = None

    def _rows(self, x):
        cur = self.current
        if x.dim() != 4 or x.shape[1:] != cur.shape[1:]:
            return None
        rows = []
        for row in x:
            match = [j for j in range(cur.shape[0]) if torch.equal(row, cur[j])]
            if len(match) != 1:
                return None
            rows.append(match[0])
        return rows

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.current is not None and func in (F.conv2d, torch.conv2d):
            weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
            rows = self._rows(args[0])
            if rows is not None:
                for r in rows:
                    self.runs[-1][r] = int(weight.shape[0])
        return func(*args, **kwargs)


def batch(scales, seed, queries=12):
    g = torch.Generator().manual_seed(seed)
    n = len(scales)
    inp = torch.randn(n, 3, LR, LR, generator=g)
    coord = torch.rand(n, queries, 2, generator=g) * 2 - 1
    cell = torch.stack([torch.full((queries, 2), 2 / round(LR * s)) for s in scales])
    gt = torch.randn(n, queries, 3, generator=g)
    return inp, coord, cell, gt


def replay():
    """Run the loop; returns [(label, expected per-sample filters, what ran, problem)]: what ran
    is the list of encoder runs of that step (each a per-sample list of filters), problem says
    how the features differed from the batch's own scale or what the step raised ('' if nothing)."""
    torch.manual_seed(0)
    model = OpIIF()
    anysr.anysrify(model, anysr.AnySRConfig(reset_prob=0.0, mixed_path="grouped", seed=0))
    randomize_gates(model)
    rec = ConvWidths(model, ["encoder.body.0", "encoder.body.1"])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    table = []
    with defer_features(model), rec:
        for step, (label, scales, how) in enumerate(LOOP):
            inp, coord, cell, gt = batch(scales, step)
            expected = [CHANNELS[s] for s in scales]
            effective = torch.tensor([[round(LR * s) / LR] * 2 for s in scales])
            model.train(not how.startswith(("eval", "no_grad")))
            problem = ""
            try:
                with torch.set_grad_enabled(how.startswith("train")):
                    if "twice" in how:  # another batch's feature call first: the second one counts
                        model("gen_feat", inp=torch.randn(1, 3, LR + 2, LR + 2))
                    feat = model("gen_feat", inp=inp)
                    if "chunked" in how:
                        pred = torch.cat([model("query_rgb", feat=feat, coord=coord[:, i:i + 5], cell=cell[:, i:i + 5])
                                          for i in range(0, coord.shape[1], 5)], dim=1)
                    else:
                        pred = model("query_rgb", feat=feat, coord=coord, cell=cell)
                rec.on = False
                with torch.no_grad(), anysr.use_scale(model, effective):  # the encoder alone, scale given
                    reference = model.encoder(inp)
                rec.on = True
                diff = float((model.feat.detach() - reference).abs().max())
                if diff > 1e-5:
                    problem = f"features differ by {diff:.3g} from the batch's own scale"
                if how.startswith("train"):
                    opt.zero_grad()
                    F.l1_loss(pred, gt).backward()
                    opt.step()
            except AnySRError as exc:
                rec.on, rec.current = True, None
                problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
            runs, rec.runs = [run for run in rec.runs if None not in run], []
            if runs[0::2] != runs[1::2]:
                problem += f" the two blocks ran {runs}"
            table.append((label, expected, runs[0::2], problem))
    return table


def format_table(table) -> str:
    return "\n".join(f"{label:>4}  expected {str(expected):<16} ran {str(ran):<26} {problem}"
                     for label, expected, ran, problem in table)


def test_every_iteration_runs_its_own_batch_widths():
    table = replay()
    wrong = [row for row in table if row[2] != [row[1]] or row[3]]
    assert not wrong, "\n" + format_table(table)


def test_deferred_feature_keeps_the_grad_mode_of_its_call():
    """A feature call made under no_grad stays without gradients when its query runs with them."""
    model = anysr.anysrify(OpIIF(), anysr.AnySRConfig(reset_prob=0.0, seed=0)).train()
    inp, coord, cell, _ = batch([2.0, 3.0], 0)
    with defer_features(model):
        with torch.no_grad():
            feat = model("gen_feat", inp=inp)
        pred = model("query_rgb", feat=feat, coord=coord, cell=cell)
    pred.sum().backward()
    assert model.imnet.weight.grad is not None
    assert all(p.grad is None for p in model.encoder.parameters())


if __name__ == "__main__":  # the per-iteration table, for the record
    print(format_table(replay()))
