"""Independent, deliberately plain implementations of the paper's equations (Eq. 6-8)
and of the slimmable blocks, used to check the package's vectorised code paths."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def floor_width(c, w):
    return math.floor(c * w + 1e-6)


def interweave_vector(pooled, s_h, s_w, channels, lam, interweave="interleave"):
    """Eq. 7 written as a loop: the pair follows every complete chunk of C/lambda features."""
    out = []
    if interweave == "concat":
        return list(pooled) + [s_h, s_w]
    chunk = channels // lam
    for i, value in enumerate(pooled):
        out.append(value)
        if (i + 1) % chunk == 0:
            out.extend([s_h, s_w])
    return out


def gate_values(gate, feat, scale, n, kind):
    """Eq. 8 for one sample: feat (n, H, W) -> n gate values."""
    pooled = [float(v) for v in feat.mean(dim=(1, 2))]
    v = torch.tensor(interweave_vector(pooled, float(scale[0]), float(scale[1]), gate.channels, gate.lam,
                                       gate.interweave), dtype=torch.float64)
    w1 = gate.fc1.weight.detach().double()[:, : len(v)]
    hidden = torch.relu(w1 @ v + gate.fc1.bias.detach().double())
    z = gate.fc2.weight.detach().double()[:n] @ hidden + gate.fc2.bias.detach().double()[:n]
    return (2 * torch.sigmoid(z) if kind == "identity" else torch.sigmoid(z)).float()


def _conv(conv, x, weight, bias):
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)


def plain_activation(act, h):
    """ReLU, or PReLU written out: h where h >= 0, else slope_c * h with the slopes of the
    first h.shape[1] channels (one shared slope for PReLU(1))."""
    if isinstance(act, torch.nn.PReLU):
        a = act.weight.detach()
        a = a if a.numel() == 1 else a[: h.shape[1]]
        return torch.where(h >= 0, h, a.reshape(1, -1, 1, 1) * h)
    return torch.relu(h)


def edsr_like_block(block, x, scale, width, kind, has_attention=False):
    """AnySR EDSR/RCAB block at `width`, one sample at a time."""
    outs = []
    conv1, conv2 = block.body[0], block.body[2]
    n = floor_width(conv1.out_channels, width)
    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        h = _conv(conv1, xb, conv1.weight[:n], conv1.bias[:n])
        if block.anysr_gate is not None:
            g = gate_values(block.anysr_gate, h[0], scale[b], n, kind)
            h = h * g[None, :, None, None]
        h = plain_activation(block.body[1], h)
        res = _conv(conv2, h, conv2.weight[:, :n], conv2.bias)
        if has_attention:
            outs.append(block.body[3](res) + xb)
        else:
            outs.append(res * block.res_scale + xb)
    return torch.cat(outs)


def rdb_block(block, x, scale, width, kind):
    """AnySR RDB at `width`: each dense layer keeps its first g filters; later layers and
    LFF read the same feature columns as in the full network (built by concatenating slices)."""
    outs = []
    G0 = block.convs[0].conv[0].in_channels
    G = block.convs[0].conv[0].out_channels
    g = floor_width(G, width)

    def columns(weight, layers):
        parts = [weight[:, :G0]] + [weight[:, G0 + j * G: G0 + j * G + g] for j in range(layers)]
        return torch.cat(parts, dim=1)

    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        produced = []
        for k, layer in enumerate(block.convs):
            conv = layer.conv[0]
            inp = torch.cat([xb] + produced, dim=1)
            out = _conv(conv, inp, columns(conv.weight[:g], k), conv.bias[:g])
            if k == block.gate_layer and block.anysr_gate is not None:
                out = out * gate_values(block.anysr_gate, out[0], scale[b], g, kind)[None, :, None, None]
            produced.append(plain_activation(layer.conv[1], out))
        inp = torch.cat([xb] + produced, dim=1)
        outs.append(_conv(block.LFF, inp, columns(block.LFF.weight, len(block.convs)), block.LFF.bias) + xb)
    return torch.cat(outs)


def rrdb_block(block, x, scale, width, kind):
    """AnySR RRDB at `width`, one sample at a time: in each of the three dense blocks, conv1..4
    keep their first g = floor(gc*w) filters and every conv reads [0, nf) plus the first g
    columns of each earlier growth slot; the gate weights RDB1.conv1's output; LeakyReLU
    written out with the block's slope; residual scales 0.2."""
    rdbs = [getattr(block, n) for n in block.rdb_names]
    nf, gc = rdbs[0].conv1.in_channels, rdbs[0].conv1.out_channels
    g = floor_width(gc, width)

    def columns(weight, layers):
        return torch.cat([weight[:, :nf]] + [weight[:, nf + j * gc: nf + j * gc + g] for j in range(layers)], dim=1)

    outs = []
    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        out = xb
        for r, rdb in enumerate(rdbs):
            slope = rdb.lrelu.negative_slope
            produced = []
            for k in range(4):
                conv = getattr(rdb, f"conv{k + 1}")
                inp = torch.cat([out] + produced, dim=1)
                h = _conv(conv, inp, columns(conv.weight[:g], k), conv.bias[:g])
                if r == 0 and k == 0 and block.anysr_gate is not None:
                    h = h * gate_values(block.anysr_gate, h[0], scale[b], g, kind)[None, :, None, None]
                produced.append(torch.where(h >= 0, h, slope * h))
            inp = torch.cat([out] + produced, dim=1)
            out = _conv(rdb.conv5, inp, columns(rdb.conv5.weight, 4), rdb.conv5.bias) * 0.2 + out
        outs.append(out * 0.2 + xb)
    return torch.cat(outs)
