"""Residual blocks in the layouts the SR ecosystem uses, written here (no library code copied), to
show that anysrify recognises a block by what it computes.

``CONVERTS``: variant name -> (factory of one block on C channels, family it converts as).
``REFUSED``: blocks that must not convert, with a word of the reason anysrify gives.
Every factory takes the channel count ``c`` and returns an ``nn.Module`` mapping (B, c, H, W)
to (B, c, H, W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lookalike_rrdb import ResidualDenseBlock_5C


def conv(cin, cout, k=3, bias=True):
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


# ---------------------------------------------------------------------------
# two-conv residual blocks


class NoBNBlock(nn.Module):
    """BasicSR / MMEditing style: conv1, relu, conv2 attributes, ``identity + out * res_scale``."""

    def __init__(self, c, res_scale=1.0):
        super().__init__()
        self.conv1, self.relu, self.conv2 = conv(c, c), nn.ReLU(inplace=True), conv(c, c)
        self.res_scale = res_scale

    def forward(self, x):
        identity = x
        out = self.conv2(self.relu(self.conv1(x)))
        return identity + out * self.res_scale


class OddNames(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.squeeze_me, self.nonlin, self.expand_me = conv(c, c), nn.ReLU(), conv(c, c)

    def forward(self, inp):
        return inp + self.expand_me(self.nonlin(self.squeeze_me(inp)))


class ListBlock(nn.Module):
    """Convolutions in a ModuleList."""

    def __init__(self, c):
        super().__init__()
        self.convs = nn.ModuleList([conv(c, c), conv(c, c)])
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.convs[1](self.act(self.convs[0](x)))
        return out + x


class TrunkBlock(nn.Module):
    """A differently named Sequential, ``torch.add``."""

    def __init__(self, c):
        super().__init__()
        self.trunk = nn.Sequential(conv(c, c), nn.ReLU(True), conv(c, c))

    def forward(self, x):
        return torch.add(x, self.trunk(x))


class BiasFree(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a, self.b = conv(c, c, bias=False), conv(c, c, bias=False)

    def forward(self, x):
        return x + self.b(torch.relu(self.a(x)))


ACTIVATION_MODULES = {"relu": lambda c: nn.ReLU(), "leaky": lambda c: nn.LeakyReLU(0.1), "prelu": nn.PReLU,
                      "gelu": lambda c: nn.GELU(), "silu": lambda c: nn.SiLU(), "elu": lambda c: nn.ELU(),
                      "hardswish": lambda c: nn.Hardswish()}
ACTIVATION_FUNCTIONS = {"relu": F.relu, "leaky": lambda h: F.leaky_relu(h, 0.1), "gelu": F.gelu, "silu": F.silu}


class ModuleAct(nn.Module):
    def __init__(self, c, act="relu"):
        super().__init__()
        self.c1, self.act, self.c2 = conv(c, c), ACTIVATION_MODULES[act](c), conv(c, c)

    def forward(self, x):
        return x + self.c2(self.act(self.c1(x)))


def functional_act(name):
    fn = ACTIVATION_FUNCTIONS[name]

    class FunctionalAct(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c1, self.c2 = conv(c, c), conv(c, c)

        def forward(self, x):
            return x + self.c2(fn(self.c1(x)))

    FunctionalAct.__name__ = f"Functional{name.title()}"
    return FunctionalAct


class FunctionalPReLU(nn.Module):
    """A per-channel PReLU written as ``F.prelu`` with the block's own slopes."""

    def __init__(self, c):
        super().__init__()
        self.c1, self.c2 = conv(c, c), conv(c, c)
        self.slopes = nn.Parameter(torch.linspace(0.05, 0.5, c))

    def forward(self, x):
        return x + self.c2(F.prelu(self.c1(x), self.slopes))


class ScaledBlock(nn.Module):
    """The residual scale as a float, a buffer, a learned scalar or absent."""

    def __init__(self, c, kind="float"):
        super().__init__()
        self.c1, self.act, self.c2 = conv(c, c), nn.ReLU(True), conv(c, c)
        self.kind = kind
        if kind == "buffer":
            self.register_buffer("scale", torch.tensor(0.1))
        elif kind == "param":
            self.scale = nn.Parameter(torch.tensor(0.1))
        elif kind == "float":
            self.scale = 0.1

    def forward(self, x):
        out = self.c2(self.act(self.c1(x)))
        if self.kind == "none":
            return x + out
        return x + out * self.scale


class ResidualSpelling(nn.Module):
    """The residual written five ways."""

    def __init__(self, c, how="x+out"):
        super().__init__()
        self.c1, self.c2 = conv(c, c), conv(c, c)
        self.how = how

    def forward(self, x):
        out = self.c2(F.relu(self.c1(x)))
        if self.how == "x+out":
            return x + out
        if self.how == "out+x":
            return out + x
        if self.how == "torch.add":
            return torch.add(x, out)
        if self.how == "mul.add":
            return out.mul(0.2).add(x)
        out.mul_(0.2)  # EDSR-PyTorch: res = body(x).mul(s); res += x
        out += x
        return out


class TensorScaled(nn.Module):
    """The residual scale as a plain tensor attribute (neither buffer nor parameter)."""

    def __init__(self, c):
        super().__init__()
        self.c1, self.c2 = conv(c, c), conv(c, c)
        self.scale = torch.tensor(0.3)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(x))) * self.scale


class WeightNormed(nn.Module):
    """WDSR style: weight-normalised convolutions, by the old hook API or by parametrization."""

    def __init__(self, c, parametrized=False):
        super().__init__()
        import warnings

        norm = nn.utils.parametrizations.weight_norm if parametrized else nn.utils.weight_norm
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the hook API is deprecated, still common
            self.c1, self.c2 = norm(conv(c, c)), norm(conv(c, c))

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(x)))


# ---------------------------------------------------------------------------
# channel attention under other names


class SqueezeExcite(nn.Module):
    """Channel attention with linear layers: pool, view, fc, relu, fc, sigmoid."""

    def __init__(self, c, r=4):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, c // r), nn.Linear(c // r, c)

    def forward(self, t):
        b, c, _, _ = t.size()
        y = t.mean((2, 3))
        y = torch.sigmoid(self.fc2(F.relu(self.fc1(y)))).view(b, c, 1, 1)
        return t * y


class ExpandedAttention(nn.Module):
    """Squeeze-and-excitation written with ``expand_as`` and an adaptive max pool (CBAM's channel half)."""

    def __init__(self, c, r=4):
        super().__init__()
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(nn.Conv2d(c, c // r, 1), nn.ReLU(), nn.Conv2d(c // r, c, 1), nn.Sigmoid())

    def forward(self, t):
        return t * self.mlp(self.pool(t)).expand_as(t)


class MaxPoolAttentionBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.head, self.tail, self.drop = conv(c, c), conv(c, c), nn.Dropout(0.1)
        self.att = ExpandedAttention(c)

    def forward(self, x):
        return x + self.att(self.tail(self.drop(F.relu(self.head(x)))))


class AttentionBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.first, self.second = conv(c, c), conv(c, c)
        self.excite = SqueezeExcite(c)

    def forward(self, x):
        return self.excite(self.second(F.relu(self.first(x)))) + x


class ConvAttention(nn.Module):
    """RCAN-like attention, pooled by a function, convolutions in a Sequential."""

    def __init__(self, c, r=4):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(c, c // r, 1), nn.ReLU(True), nn.Conv2d(c // r, c, 1), nn.Sigmoid())

    def forward(self, t):
        return t * self.squeeze(F.adaptive_avg_pool2d(t, 1))


class GatedResidual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.Sequential(conv(c, c), nn.LeakyReLU(0.2, True), conv(c, c), ConvAttention(c))

    def forward(self, x):
        return x + 0.5 * self.layers(x)


# ---------------------------------------------------------------------------
# dense blocks


class GrowthLayer(nn.Module):
    def __init__(self, cin, g):
        super().__init__()
        self.conv = conv(cin, g)

    def forward(self, x):
        return torch.cat([x, F.relu(self.conv(x))], 1)


class LayersRDB(nn.Module):
    """MMEditing style: dense layers under ``layers``, the fusion conv ``lff`` of its own."""

    def __init__(self, c, g=8, n=3):
        super().__init__()
        self.layers = nn.Sequential(*[GrowthLayer(c + i * g, g) for i in range(n)])
        self.lff = nn.Conv2d(c + n * g, c, 1)

    def forward(self, x):
        return self.lff(self.layers(x)) + x


class ListRDB(nn.Module):
    """Dense convolutions in a ModuleList with explicit concatenations, fusion named ``merge``."""

    def __init__(self, c, g=8, n=3):
        super().__init__()
        self.dense = nn.ModuleList([conv(c + i * g, g) for i in range(n)])
        self.merge = nn.Conv2d(c + n * g, c, 1)

    def forward(self, x):
        feats = [x]
        for layer in self.dense:
            feats.append(F.leaky_relu(layer(torch.cat(feats, 1)), 0.2))
        return x + self.merge(torch.cat(feats, 1))


#: ESRGAN's five-conv dense block: conv1..conv4 grow by g, conv5 fuses, ``x5 * 0.2 + x`` (lookalike_rrdb)
FiveConvDense = ResidualDenseBlock_5C


class NestedDense(nn.Module):
    """An RRDB of five-conv dense blocks (lower-case ``rdb1..rdb3``)."""

    def __init__(self, c, g=8):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = FiveConvDense(c, g), FiveConvDense(c, g), FiveConvDense(c, g)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


# ---------------------------------------------------------------------------
# any other residual conv block


class ThreeConv(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a, self.b, self.c = conv(c, c), conv(c, c // 2, 1), conv(c // 2, c)

    def forward(self, x):
        return x + self.c(F.relu(self.b(F.relu(self.a(x)))))


class TwoBranches(nn.Module):
    """Two parallel convolutions joined by a concatenation, then fused."""

    def __init__(self, c):
        super().__init__()
        self.left, self.right, self.fuse = conv(c, c // 2), conv(c, c // 2, 5), nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.fuse(torch.cat([F.relu(self.left(x)), F.relu(self.right(x))], 1))


# ---------------------------------------------------------------------------
# what must not convert


class NoSkip(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.c2 = conv(c, c), conv(c, c)

    def forward(self, x):
        return self.c2(F.relu(self.c1(x)))


class FlippedBranch(nn.Module):
    """The residual adds a reshaped (flipped) branch."""

    def __init__(self, c):
        super().__init__()
        self.c1, self.c2 = conv(c, c), conv(c, c)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(x))).flip(-1)


class FlippedIdentity(nn.Module):
    """The identity path is reshaped before the sum."""

    def __init__(self, c):
        super().__init__()
        self.c1, self.c2 = conv(c, c), conv(c, c)

    def forward(self, x):
        return x.flip(-1) + self.c2(F.relu(self.c1(x)))


class NormBetween(nn.Module):
    """SRResNet style: batch norm between the convolutions."""

    def __init__(self, c):
        super().__init__()
        self.c1, self.bn, self.c2 = conv(c, c), nn.BatchNorm2d(c), conv(c, c)

    def forward(self, x):
        return x + self.c2(F.relu(self.bn(self.c1(x))))


class NormOnInput(nn.Module):
    """Pre-activation style: batch norm on the block input (its statistics would differ between
    per-width groups of a training batch)."""

    def __init__(self, c):
        super().__init__()
        self.bn, self.c1, self.c2 = nn.BatchNorm2d(c), conv(c, c), conv(c, c)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(F.relu(self.bn(x)))))


class GroupedMiddle(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, c, 3, padding=1, groups=4), conv(c, c)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(x)))


class LeakyInside(nn.Module):
    """The inner channels also reach the output directly: they are not internal."""

    def __init__(self, c):
        super().__init__()
        self.c1, self.c2 = conv(c, c), conv(c, c)

    def forward(self, x):
        h = F.relu(self.c1(x))
        return x + self.c2(h) + h


class WindowAttention(nn.Module):
    """A Swin-style attention block (no convolutions to slim)."""

    def __init__(self, c, heads=2):
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        y = self.norm(t)
        t = t + self.attn(y, y, y, need_weights=False)[0]
        t = t + self.mlp(self.norm(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


def variants() -> dict:
    """name -> (block factory taking c, expected family)."""
    out = {
        "conv1/relu/conv2 attributes": (lambda c: NoBNBlock(c, 0.5), "edsr"),
        "odd names": (OddNames, "edsr"),
        "ModuleList": (ListBlock, "edsr"),
        "named Sequential + torch.add": (TrunkBlock, "edsr"),
        "bias-free convs": (BiasFree, "edsr"),
        "functional prelu": (FunctionalPReLU, "edsr"),
        "res_scale a plain tensor attribute": (TensorScaled, "edsr"),
        "weight norm (hooks)": (WeightNormed, "edsr"),
        "weight norm (parametrization)": (lambda c: WeightNormed(c, True), "edsr"),
        "channel attention (linear SE)": (AttentionBlock, "rcab"),
        "channel attention (conv, functional pool)": (GatedResidual, "rcab"),
        "channel attention (max pool, expand_as) + dropout": (MaxPoolAttentionBlock, "rcab"),
        "dense layers under `layers` + lff": (LayersRDB, "rdb"),
        "dense convs in a ModuleList + merge": (ListRDB, "rdb"),
        "five-conv dense, x + out * 0.2": (FiveConvDense, "rdb"),
        "RRDB of five-conv dense blocks": (NestedDense, "rrdb"),
        "three-conv chain": (ThreeConv, "residual"),
        "two parallel branches": (TwoBranches, "residual"),
    }
    for name in ACTIVATION_MODULES:
        out[f"module {name}"] = (lambda c, n=name: ModuleAct(c, n), "edsr")
    for name in ACTIVATION_FUNCTIONS:
        out[f"functional {name}"] = (functional_act(name), "edsr")
    for kind in ("float", "buffer", "param", "none"):
        out[f"res_scale {kind}"] = (lambda c, k=kind: ScaledBlock(c, k), "edsr")
    for how in ("x+out", "out+x", "torch.add", "mul.add", "in-place"):
        out[f"residual {how}"] = (lambda c, h=how: ResidualSpelling(c, h), "edsr")
    return out


#: blocks that must not convert: name -> (factory, a phrase of the reason)
REFUSED = {
    "no skip": (NoSkip, "no identity path"),
    "flipped branch": (FlippedBranch, "flip"),
    "flipped identity": (FlippedIdentity, "not the block input"),
    "batch norm between the convs": (NormBetween, "batch norm"),
    "batch norm on the input": (NormOnInput, "BatchNorm2d"),
    "grouped conv": (GroupedMiddle, "groups=4"),
    "inner channels reach the output": (LeakyInside, "nothing to slice"),
}


class Net(nn.Module):
    """head conv, then two blocks, each a (B, c, H, W) -> (B, c, H, W) module."""

    def __init__(self, factory, c=16):
        super().__init__()
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(factory(c), factory(c))

    def forward(self, x):
        return self.blocks(self.head(x))
