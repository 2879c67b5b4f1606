"""Shared fixtures: tiny look-alike encoders (fast on 2 CPU cores) and seeding."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from anysr_plugin.reference import RCAN, RDN, make_edsr_baseline


def tiny_edsr(**kw):
    kw.setdefault("n_resblocks", 2)
    kw.setdefault("n_feats", 16)
    return make_edsr_baseline(**kw)


def tiny_rdn(**kw):
    kw.setdefault("G0", 16)
    kw.setdefault("D", 2)
    kw.setdefault("C", 3)
    kw.setdefault("G", 16)
    return RDN(**kw)


def tiny_rcan(**kw):
    kw.setdefault("n_resgroups", 2)
    kw.setdefault("n_resblocks", 2)
    kw.setdefault("n_feats", 16)
    kw.setdefault("reduction", 4)
    return RCAN(**kw)


ENCODERS = {
    "edsr": tiny_edsr,
    "edsr-shared-act": lambda: tiny_edsr(shared_act=True),
    "edsr-res-scale": lambda: tiny_edsr(res_scale=0.1),
    "rdn": tiny_rdn,
    "rcan": tiny_rcan,
}


def randomize_gates(model, seed=0):
    """Give every gate non-trivial weights (the identity init makes fc2 zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "anysr_gate" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)
    yield


@pytest.fixture(params=sorted(ENCODERS))
def encoder_kind(request):
    return request.param


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """The suite's tensors are tiny: one intra-op thread is faster than two and cannot
    oversubscribe a busy 2-core CI machine (some tests also spawn processes)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class SRNOStub(nn.Module):
    """Just enough of an SRNO (``sronet``) wrapper to hold an encoder under ``encoder.`` and
    SRNO's own top-level ``conv00`` / ``conv0`` / ``fc1`` / ``fc2`` (names that must never be
    taken for gate weights) for checkpoint-conversion tests; query_rgb returns the features."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.conv00 = nn.Conv2d(266, 8, 1)
        self.conv0 = nn.Conv2d(8, 8, 1)
        self.fc1 = nn.Conv2d(8, 8, 1)
        self.fc2 = nn.Conv2d(8, 3, 1)

    def gen_feat(self, inp):
        self.feat = self.encoder(inp)

    def query_rgb(self, coord, cell):
        return self.feat


#: one sample per scale group: widths 0.5, 1.0, 0.7, 0.9 under the default bounds
MIXED_SCALES = torch.tensor([[1.2, 1.2], [4.0, 4.0], [2.0, 2.3], [3.0, 2.9]])


def assert_mixed_batch_equals_each_sample(model, x, scale=MIXED_SCALES):
    """A batch whose samples run at different widths gives each sample what it gives alone."""
    import anysr_plugin as anysr

    with torch.no_grad(), anysr.use_scale(model, scale):
        mixed = model(x)
    for b in range(x.shape[0]):
        with torch.no_grad(), anysr.use_scale(model, scale[b:b + 1]):
            torch.testing.assert_close(mixed[b:b + 1], model(x[b:b + 1]), atol=2e-5, rtol=1e-4)


class ChannelRecorder:
    """Records, per call of each AnySR block, the channel count of every sample (its plan, peeked
    without consuming or remembering anything)."""

    def __init__(self, model):
        from anysr_plugin.blocks import AnySRBlock

        self.calls = []
        for m in model.modules():
            if isinstance(m, AnySRBlock):
                m.register_forward_pre_hook(self._pre)

    def _pre(self, block, args):
        from anysr_plugin.plan import peek_plan

        self.calls.append([block.width_channels(w) for w in peek_plan(block, args[0])[1]])
