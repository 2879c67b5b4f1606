"""A look-alike of the official AnySR release (CrispyFeSo4/AnySR), written for the tests from
the documented facts about it (nothing copied): its model registry and spec handling, its
EDSR / RDN encoders with slimmable blocks and scale-aware gates, and its test loop.

* registry: ``register(name)``; ``make(spec, args, load_sd)`` builds
  ``models[spec['name']](**spec['args'])`` and, with ``load_sd``, loads
  ``torch.load(spec['path'])['model']['sd']`` after renaming ``body.0`` / ``body.2`` after
  the 15th character to ``conv1`` / ``conv2``, keeping only keys the model has, non-strict;
  ``test_make(spec, path, load_sd)`` builds the same way and loads
  ``torch.load(path)['model']['sd']`` **strictly**.
* ``sronet(encoder_spec, width, blocks)`` builds its encoder with
  ``make(encoder_spec, load_sd=True)`` (so ``encoder_spec['path']`` must exist), then SRNO's
  decoder (the package's SRNO look-alike).
* ``edsr-anysr-baseline(n_resblocks=16, n_feats=64, res_scale=1, scale=2, no_upsampling=False,
  rgb_range=1)`` and ``rdn-anysr(G0=64, RDNkSize=3, RDNconfig='B', scale=2,
  no_upsampling=False, rgb_range=1)``; plain ``edsr-baseline`` / ``rdn`` are not registered.
* The encoders apply ``sub_mean``, pick the width from ``max(scale, scale2)`` by float
  equality against ``[1.1, ..., 4.0]`` (groups 1.1-1.7, 1.8-2.5, 2.6-3.2, else full), and
  give every gate the pair ``(scale, scale2)``, negated when ``max * 10 % 2 == 1``.
* ``eval_call``: the test loop sets ``encoder.scale = encoder.scale2 = torch.tensor(s)``
  (the nominal scale) and calls ``model(inp, coord, cell * c)``, ``c = max(s / 4, 1)``
  under ``--mcell``; its data has ``h_lr = floor(H / s + 1e-9)``, ``h_hr = round(h_lr * s)``.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from anysr_plugin.reference.encoders import MeanShift
from anysr_plugin.reference.models import make_coord
from anysr_plugin.reference.srno import SRNO

models = {}


def register(name):
    def decorator(fn):
        models[name] = fn
        return fn
    return decorator


def replace(pretrain_dict, model_dict):
    renamed = {}
    for k, v in pretrain_dict.items():
        if "body.0." in k[15:]:
            renamed[k[:15] + k[15:].replace("body.0", "conv1")] = v
        elif "body.2" in k[15:]:
            renamed[k[:15] + k[15:].replace("body.2", "conv2")] = v
    pretrain_dict = {**pretrain_dict, **renamed}
    model_dict.update({k: v for k, v in pretrain_dict.items() if k in model_dict})
    return model_dict


def _build(spec, args):
    kwargs = copy.deepcopy(spec["args"])
    kwargs.update(args or {})
    return models[spec["name"]](**kwargs)


def make(spec, args=None, load_sd=False):
    model = _build(spec, args)
    if load_sd:
        pretrain = torch.load(spec["path"], weights_only=True)
        model.load_state_dict(replace(pretrain["model"]["sd"], model.state_dict()), strict=False)
    return model


def test_make(spec, path, args=None, load_sd=False):
    model = _build(spec, args)
    if load_sd:
        model.load_state_dict(torch.load(path, weights_only=True)["model"]["sd"])  # strict
    return model


test_make.__test__ = False  # not a pytest test


# ---------------------------------------------------------------------------
# slimmable convolutions and the scale-aware gate


class USConv2d(nn.Conv2d):
    """Prefix-sliced conv: input columns follow the input if us[0]; output int(C*w) filters if us[1]
    (``pair_out``: ``int(C // 2 * w) * 2``, the RDN gate's fc2)."""

    def __init__(self, cin, cout, k, us, pair_out=False):
        super().__init__(cin, cout, k, padding=k // 2)
        self.us, self.width_mult, self.pair_out = us, 1.0, pair_out

    def forward(self, x):
        cin = x.shape[1] if self.us[0] else self.in_channels
        if not self.us[1]:
            cout = self.out_channels
        elif self.pair_out:
            cout = int(self.out_channels // 2 * self.width_mult) * 2
        else:
            cout = int(self.out_channels * self.width_mult)
        return F.conv2d(x, self.weight[:cout, :cin], self.bias[:cout], self.stride, self.padding)


def scale_aware_attn(feature, r, fc1, fc2):
    b, c = feature.shape[:2]
    f = feature.mean(dim=(2, 3))
    flag = -1 if max(r[0], r[1]) * 10 % 2 == 1 else 1    # tensor arithmetic, as released
    r0 = (r * flag).expand(b, -1)
    parts = []
    for i in range(0, c, 16):
        if i + 16 <= c:
            parts += [f[:, i:i + 16], r0]
        else:
            parts.append(f[:, i:])
    x = torch.cat(parts, 1).view(b, -1, 1, 1)
    return torch.sigmoid(fc2(F.relu(fc1(x))))


def scale_pair(scale, scale2):
    return torch.stack([torch.as_tensor(scale), torch.as_tensor(scale2)]).float()


SCALE_LIST = [round(x * 0.1 + 1, 1) for x in range(1, 31)]


def group_width(scale, scale2, widths):
    m = max(scale, scale2)
    if m in SCALE_LIST[:7]:
        return widths[0]
    if m in SCALE_LIST[7:15]:
        return widths[1]
    if m in SCALE_LIST[15:22]:
        return widths[2]
    return 1.0


# ---------------------------------------------------------------------------
# EDSR-anysr


class ReleaseBlock(nn.Module):
    def __init__(self, nf=64):
        super().__init__()
        self.conv1 = USConv2d(nf, nf, 3, [False, True])
        self.conv2 = USConv2d(nf, nf, 3, [True, False])
        self.fc1 = USConv2d(nf + 8, 2 * nf, 1, [True, False])
        self.fc2 = USConv2d(2 * nf, nf, 1, [False, True])
        self.scale = self.scale2 = None

    def set_width(self, w):
        for m in (self.conv1, self.conv2, self.fc1, self.fc2):
            m.width_mult = w

    def forward(self, x):
        out = self.conv1(x)
        out = out * scale_aware_attn(out, scale_pair(self.scale, self.scale2), self.fc1, self.fc2)
        return x + self.conv2(F.relu(out))


class ReleaseEDSR(nn.Module):
    def __init__(self, n_resblocks=16, n_feats=64, rgb_range=1):
        super().__init__()
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(nn.Conv2d(3, n_feats, 3, padding=1))
        self.body = nn.Sequential(*[ReleaseBlock(n_feats) for _ in range(n_resblocks)],
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.out_dim = n_feats
        self.scale = self.scale2 = 2

    def forward(self, x):
        x = self.sub_mean(x)
        width = group_width(self.scale, self.scale2, (0.5, 0.7, 0.9))
        x = self.head(x)
        res = x
        for blk in self.body[:-1]:
            blk.set_width(width)
            blk.scale, blk.scale2 = self.scale, self.scale2
            res = blk(res)
        return self.body[-1](res) + x


@register("edsr-anysr-baseline")
def make_edsr_anysr_baseline(n_resblocks=16, n_feats=64, res_scale=1, scale=2, no_upsampling=False, rgb_range=1):
    assert no_upsampling, "the look-alike runs at LR resolution only"
    return ReleaseEDSR(n_resblocks, n_feats, rgb_range)  # res_scale is accepted and unused, as released


# ---------------------------------------------------------------------------
# RDN-anysr


class DenseLayer(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = nn.Sequential(conv, nn.ReLU())


class ReleaseRDB(nn.Module):
    def __init__(self, G0=64, G=64):
        super().__init__()
        layers = [DenseLayer(nn.Conv2d(G0 + c * G, G, 3, padding=1)) for c in range(4)]
        layers += [DenseLayer(USConv2d(G0 + 4 * G, G, 3, [False, True])),
                   DenseLayer(USConv2d(G0 + 5 * G, G, 3, [True, False])),
                   DenseLayer(USConv2d(G0 + 6 * G, G, 3, [True, True])),
                   DenseLayer(USConv2d(G0 + 7 * G, G, 3, [True, False]))]
        self.convs = nn.Sequential(*layers)
        self.LFF = USConv2d(G0 + 8 * G, G0, 1, [True, False])
        self.fc1 = USConv2d(2 * (G + 8), 256, 1, [True, False])
        self.fc2 = USConv2d(256, 2 * G, 1, [False, True], pair_out=True)
        self.split = G0 + 6 * G
        self.scale = self.scale2 = None
        self.sizes = None

    def set_width(self, w):
        for layer in self.convs[4:]:
            layer.conv[0].width_mult = w
        for m in (self.LFF, self.fc1, self.fc2):
            m.width_mult = w

    def forward(self, x):
        res = x
        for layer in self.convs:
            res = torch.cat((res, layer.conv(res)), 1)
        former, attn_fea = res[:, :self.split], res[:, self.split:]
        a = scale_aware_attn(attn_fea, scale_pair(self.scale, self.scale2), self.fc1, self.fc2)
        res = torch.cat((former, attn_fea * a), 1)
        fc1_in = attn_fea.shape[1] + 2 * (attn_fea.shape[1] // 16)
        self.sizes = [fc1_in, a.shape[1], res.shape[1]]
        return self.LFF(res) + x


RDN_CONFIGS = {"A": (20, 6, 32), "B": (16, 8, 64)}


class ReleaseRDN(nn.Module):
    """``D`` overrides config B's 16 RDBs for fast direct tests; the registered factory has no D."""

    def __init__(self, G0=64, RDNkSize=3, RDNconfig="B", rgb_range=1, D=None):
        super().__init__()
        d, _, G = RDN_CONFIGS[RDNconfig]
        self.D = D or d
        k = RDNkSize
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.SFENet1 = nn.Conv2d(3, G0, k, padding=(k - 1) // 2)
        self.SFENet2 = nn.Conv2d(G0, G0, k, padding=(k - 1) // 2)
        self.RDBs = nn.ModuleList([ReleaseRDB(G0, G) for _ in range(self.D)])
        self.GFF = nn.Sequential(nn.Conv2d(self.D * G0, G0, 1), nn.Conv2d(G0, G0, k, padding=(k - 1) // 2))
        self.out_dim = G0
        self.scale = self.scale2 = 2

    def width(self):
        return group_width(self.scale, self.scale2, (0.7, 0.8, 0.9))

    def forward(self, x):
        x = self.sub_mean(x)
        w = self.width()
        f1 = self.SFENet1(x)
        x = self.SFENet2(f1)
        outs = []
        for rdb in self.RDBs:
            rdb.set_width(w)
            rdb.scale, rdb.scale2 = self.scale, self.scale2
            x = rdb(x)
            outs.append(x)
        return self.GFF(torch.cat(outs, 1)) + f1


@register("rdn-anysr")
def make_rdn_anysr(G0=64, RDNkSize=3, RDNconfig="B", scale=2, no_upsampling=False, rgb_range=1):
    assert no_upsampling, "the look-alike runs at LR resolution only"
    return ReleaseRDN(G0, RDNkSize, RDNconfig, rgb_range)


# ---------------------------------------------------------------------------
# sronet and the test loop


class ReleaseSRNO(SRNO):
    def __init__(self, encoder_spec, width=256, blocks=16):
        super().__init__(encoder=make(encoder_spec, load_sd=True), width=width, blocks=blocks)


register("sronet")(ReleaseSRNO)


def test_sizes(hr_size, s):
    """(LR size, HR size) of the release's test data for an HR image of `hr_size` at scale `s`."""
    lr = tuple(math.floor(n / s + 1e-9) for n in hr_size)
    return lr, tuple(round(n * s) for n in lr)


test_sizes.__test__ = False


def eval_call(model, inp, hr_size, s, mcell=True, scale_max=4):
    """The release's eval_psnr call on one batch: nominal scale attributes, full coord grid, cell
    clipped by ``max(s / scale_max, 1)`` under ``--mcell``."""
    b = inp.shape[0]
    coord = make_coord(hr_size, flatten=False).unsqueeze(0).expand(b, *hr_size, 2)
    cell = torch.tensor([2 / hr_size[0], 2 / hr_size[1]], dtype=torch.float32).expand(b, 2)
    c = max(s / scale_max, 1) if mcell else 1
    model.encoder.scale = model.encoder.scale2 = torch.tensor(s)
    with torch.no_grad():
        return model(inp, coord, cell * c)


__all__ = ["models", "register", "make", "test_make", "USConv2d", "ReleaseBlock", "ReleaseEDSR", "ReleaseRDB",
           "ReleaseRDN", "ReleaseSRNO", "DenseLayer", "test_sizes", "eval_call", "SCALE_LIST"]
