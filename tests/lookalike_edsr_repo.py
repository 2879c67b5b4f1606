"""Write look-alike EDSR-PyTorch-family repositories (Meta-SR, ArbSR) into a folder.

Written here from the documented facts (docs/upstream.md, "EDSR-PyTorch family"), not
copied: the same module names, class names, attribute names, state_dict key patterns,
call signatures and quirks the adapters must survive, at toy sizes so a whole
``main.py`` run takes about a second on a CPU.

* ``option.py`` parses ``sys.argv`` at import (unknown flags exit with code 2);
  ArbSR-style ``type=bool`` flags (``--cpu True``, ``--test_only True``).
* ``model/__init__.py``: ``Model`` wrapper with ``set_scale`` plumbing, ``get_model``,
  ``state_dict`` without prefix, DataParallel when ``n_GPUs > 1``, lenient ``load``
  (Meta-SR: ``strict=False`` everywhere; ArbSR: resume 0 = filter + strict, N = ``strict=False``,
  -1 = nothing).
* nets: ``MetaRDN`` (``RDBs.{d}.convs.{c}.conv.0``, ``LFF``, ``GFF``, ``P2W.meta_block``,
  ``set_scale(idx)``, ``forward(x, pos_mat)``), ``EDSR`` in ``metaedsr.py`` (one ReLU shared by
  every ResBlock), ``RCAN`` in ``metarcan.py``, ``ArbRCAN`` (RCAB groups, ``sa_adapt`` with
  BatchNorm, ``sa_upsample``, ``tail = [None, conv]``, ``set_scale(scale, scale2)``).
* ``dataloader.py`` (Meta-SR, top level) / ``data/dataloader.py`` (ArbSR) import
  ``_DataLoaderIter`` from torch, so they fail on torch >= 1.2 exactly like upstream.
* ``utility.py`` imports ``scipy.misc`` and uses ``misc.imsave`` for ``--save_results``;
  ArbSR's ``trainer.py`` calls ``matplotlib.use('TKAgg')`` after pyplot was imported.
* trainers save bare state dicts ``experiment/<save>/model/model_{epoch}.pt`` each epoch
  and print ``[Set5 x2.0]\\tPSNR: ...`` per scale in test mode.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np

META_SCALES = (1.5, 2.0, 3.0, 4.0)
ARB_PAIRS = ((1.5, 1.5), (2.0, 2.0), (3.0, 3.0), (4.0, 4.0), (1.5, 3.0), (2.0, 4.0))
HR_SIZE = 48

_OPTION_COMMON = '''
import argparse

parser = argparse.ArgumentParser(description='look-alike {flavor}')
parser.add_argument('--n_threads', type=int, default=0)
parser.add_argument('--n_GPUs', type=int, default={n_gpus})
parser.add_argument('--seed', type=int, default=1)
parser.add_argument('--dir_data', type=str, default='./')
parser.add_argument('--data_train', type=str, default='DIV2K')
parser.add_argument('--data_test', type=str, default='Set5')
parser.add_argument('--data_range', type=str, default='1-4/1-3')
parser.add_argument('--ext', type=str, default='img')
parser.add_argument('--scale', type=str, default='')
parser.add_argument('--patch_size', type=int, default=8)
parser.add_argument('--rgb_range', type=int, default=255)
parser.add_argument('--n_colors', type=int, default=3)
parser.add_argument('--no_augment', action='store_true')
parser.add_argument('--model', default='{model}')
parser.add_argument('--pre_train', type=str, default='{pre_train}')
parser.add_argument('--precision', type=str, default='single')
parser.add_argument('--test_every', type=int, default=2)
parser.add_argument('--epochs', type=int, default=2)
parser.add_argument('--batch_size', type=int, default=2)
parser.add_argument('--lr', type=float, default=1e-4)
parser.add_argument('--lr_decay', type=int, default=200)
parser.add_argument('--gamma', type=float, default=0.5)
parser.add_argument('--start_epoch', type=int, default=0)
parser.add_argument('--skip_threshold', type=float, default=1e6)
parser.add_argument('--save', type=str, default='{save}')
parser.add_argument('--load', type=str, default='.')
parser.add_argument('--resume', type=int, default=0)
parser.add_argument('--print_every', type=int, default=1)
parser.add_argument('--self_ensemble', action='store_true')
parser.add_argument('--chop', action='store_true')
'''

_OPTION_META = _OPTION_COMMON + '''
parser.add_argument('--cpu', action='store_true')
parser.add_argument('--test_only', action='store_true')
parser.add_argument('--save_results', action='store_true')
parser.add_argument('--G0', type=int, default=16)
parser.add_argument('--RDNkSize', type=int, default=3)
parser.add_argument('--RDNconfig', type=str, default='T')
parser.add_argument('--n_resblocks', type=int, default=2)
parser.add_argument('--n_feats', type=int, default=16)
parser.add_argument('--n_resgroups', type=int, default=2)
parser.add_argument('--reduction', type=int, default=4)
parser.add_argument('--res_scale', type=float, default=1)

args = parser.parse_args()
if args.scale == '':
    args.scale = [1.5, 2.0, 3.0, 4.0]
else:
    args.scale = list(map(lambda x: float(x), args.scale.split('+')))
'''

_OPTION_ARB = _OPTION_COMMON + '''
parser.add_argument('--cpu', type=bool, default=False)
parser.add_argument('--test_only', type=bool, default=False)
parser.add_argument('--asymm', type=bool, default=True)
parser.add_argument('--scale2', type=str, default='')
parser.add_argument('--save_results', default=False)

args = parser.parse_args()
if args.scale == '' or args.scale2 == '':
    args.scale = [1.5, 2.0, 3.0, 4.0, 1.5, 2.0]
    args.scale2 = [1.5, 2.0, 3.0, 4.0, 3.0, 4.0]
else:
    args.scale = list(map(lambda x: float(x), args.scale.split('+')))
    args.scale2 = list(map(lambda x: float(x), args.scale2.split('+')))
assert len(args.scale) == len(args.scale2)
'''

_COMMON_PY = '''
import torch
import torch.nn as nn


def default_conv(in_channels, out_channels, kernel_size, bias=True):
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size // 2), bias=bias)


class MeanShift(nn.Conv2d):
    def __init__(self, rgb_range, rgb_mean=(0.4488, 0.4371, 0.4040), rgb_std=(1.0, 1.0, 1.0), sign=-1):
        super(MeanShift, self).__init__(3, 3, kernel_size=1)
        std = torch.Tensor(rgb_std)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1)
        self.bias.data = sign * rgb_range * torch.Tensor(rgb_mean) / std
        {freeze}


class ResBlock(nn.Module):
    def __init__(self, conv, n_feats, kernel_size, bias=True, bn=False, act=nn.ReLU(True), res_scale=1):
        super(ResBlock, self).__init__()
        m = [conv(n_feats, n_feats, kernel_size, bias=bias), act, conv(n_feats, n_feats, kernel_size, bias=bias)]
        self.body = nn.Sequential(*m)
        self.res_scale = res_scale

    def forward(self, x):
        res = self.body(x).mul(self.res_scale)
        res += x
        return res


class Pos2Weight(nn.Module):
    def __init__(self, inC, kernel_size=3, outC=3):
        super(Pos2Weight, self).__init__()
        self.inC, self.kernel_size, self.outC = inC, kernel_size, outC
        self.meta_block = nn.Sequential(
            nn.Linear(3, 32), nn.ReLU(inplace=True), nn.Linear(32, kernel_size * kernel_size * inC * outC))

    def forward(self, x):
        return self.meta_block(x)


def meta_upscale(p2w, x, pos_mat, scale):
    """(N, C, H, W) -> (N, 3, ceil(s)H, ceil(s)W); pos_mat rows ordered (h, i, w, j)."""
    import math
    import torch.nn.functional as F
    N, C, H, W = x.size()
    s_int = math.ceil(scale)
    local_weight = p2w(pos_mat.view(pos_mat.size(1), -1)).view(H, s_int, W, s_int, C * 9, 3)
    cols = F.unfold(x, 3, padding=1).view(N, C * 9, H, W)
    out = torch.einsum('nkhw,hiwjkc->nchiwj', cols, local_weight)
    return out.reshape(N, 3, H * s_int, W * s_int)


class CALayer(nn.Module):
    def __init__(self, channel, reduction=16):
        super(CALayer, self).__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, channel // reduction, 1, padding=0, bias=True), nn.ReLU(inplace=True),
            nn.Conv2d(channel // reduction, channel, 1, padding=0, bias=True), nn.Sigmoid())

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv_du(y)
        return x * y


class RCAB(nn.Module):
    def __init__(self, conv, n_feat, kernel_size, reduction, bias=True, bn=False, act=nn.ReLU(True), res_scale=1):
        super(RCAB, self).__init__()
        modules_body = [conv(n_feat, n_feat, kernel_size, bias=bias), act,
                        conv(n_feat, n_feat, kernel_size, bias=bias), CALayer(n_feat, reduction)]
        self.body = nn.Sequential(*modules_body)
        self.res_scale = res_scale

    def forward(self, x):
        res = self.body(x)
        res += x
        return res


class ResidualGroup(nn.Module):
    def __init__(self, conv, n_feat, kernel_size, reduction, act, res_scale, n_resblocks):
        super(ResidualGroup, self).__init__()
        modules_body = [RCAB(conv, n_feat, kernel_size, reduction, bias=True, bn=False, act=nn.ReLU(True),
                             res_scale=1) for _ in range(n_resblocks)]
        modules_body.append(conv(n_feat, n_feat, kernel_size))
        self.body = nn.Sequential(*modules_body)

    def forward(self, x):
        res = self.body(x)
        res += x
        return res
'''

_METARDN = '''
import torch
import torch.nn as nn
from model import common


def make_model(args, parent=False):
    return MetaRDN(args)


class RDB_Conv(nn.Module):
    def __init__(self, inChannels, growRate, kSize=3):
        super(RDB_Conv, self).__init__()
        self.conv = nn.Sequential(nn.Conv2d(inChannels, growRate, kSize, padding=(kSize - 1) // 2, stride=1),
                                  nn.ReLU())

    def forward(self, x):
        out = self.conv(x)
        return torch.cat((x, out), 1)


class RDB(nn.Module):
    def __init__(self, growRate0, growRate, nConvLayers, kSize=3):
        super(RDB, self).__init__()
        G0, G, C = growRate0, growRate, nConvLayers
        self.convs = nn.Sequential(*[RDB_Conv(G0 + c * G, G) for c in range(C)])
        self.LFF = nn.Conv2d(G0 + C * G, G0, 1, padding=0, stride=1)

    def forward(self, x):
        return self.LFF(self.convs(x)) + x


class MetaRDN(nn.Module):
    def __init__(self, args):
        super(MetaRDN, self).__init__()
        G0 = args.G0
        kSize = args.RDNkSize
        self.args = args
        self.scale = 1
        self.scale_idx = 0
        self.sub_mean = common.MeanShift(args.rgb_range)
        self.add_mean = common.MeanShift(args.rgb_range, sign=1)
        self.D, C, G = {'A': (20, 6, 32), 'B': (16, 8, 64), 'T': (2, 2, 8)}[args.RDNconfig]
        self.SFENet1 = nn.Conv2d(args.n_colors, G0, kSize, padding=(kSize - 1) // 2, stride=1)
        self.SFENet2 = nn.Conv2d(G0, G0, kSize, padding=(kSize - 1) // 2, stride=1)
        self.RDBs = nn.ModuleList([RDB(growRate0=G0, growRate=G, nConvLayers=C) for _ in range(self.D)])
        self.GFF = nn.Sequential(nn.Conv2d(self.D * G0, G0, 1, padding=0, stride=1),
                                 nn.Conv2d(G0, G0, kSize, padding=(kSize - 1) // 2, stride=1))
        self.P2W = common.Pos2Weight(inC=G0)

    def forward(self, x, pos_mat):
        x = self.sub_mean(x)
        f__1 = self.SFENet1(x)
        x = self.SFENet2(f__1)
        RDBs_out = []
        for i in range(self.D):
            x = self.RDBs[i](x)
            RDBs_out.append(x)
        x = self.GFF(torch.cat(RDBs_out, 1))
        x += f__1
        out = common.meta_upscale(self.P2W, x, pos_mat, self.scale)
        return self.add_mean(out)

    def set_scale(self, scale_idx):
        self.scale_idx = scale_idx
        self.scale = self.args.scale[scale_idx]
'''

_METAEDSR = '''
import torch.nn as nn
from model import common


def make_model(args, parent=False):
    return EDSR(args)


class EDSR(nn.Module):
    def __init__(self, args, conv=common.default_conv):
        super(EDSR, self).__init__()
        n_resblocks, n_feats, kernel_size = args.n_resblocks, args.n_feats, 3
        act = nn.ReLU(True)
        self.args = args
        self.sub_mean = common.MeanShift(args.rgb_range)
        self.add_mean = common.MeanShift(args.rgb_range, sign=1)
        self.head = nn.Sequential(conv(args.n_colors, n_feats, kernel_size))
        m_body = [common.ResBlock(conv, n_feats, kernel_size, act=act, res_scale=args.res_scale)
                  for _ in range(n_resblocks)]
        m_body.append(conv(n_feats, n_feats, kernel_size))
        self.body = nn.Sequential(*m_body)
        self.P2W = common.Pos2Weight(inC=n_feats)

    def forward(self, x, pos_mat):
        x = self.sub_mean(x)
        x = self.head(x)
        res = self.body(x)
        res += x
        out = common.meta_upscale(self.P2W, res, pos_mat, self.scale)
        return self.add_mean(out)

    def set_scale(self, scale_idx):
        self.scale_idx = scale_idx
        self.scale = self.args.scale[scale_idx]
'''

_METARCAN = '''
import torch.nn as nn
from model import common


def make_model(args, parent=False):
    return RCAN(args)


class RCAN(nn.Module):
    def __init__(self, args, conv=common.default_conv):
        super(RCAN, self).__init__()
        n_feats, kernel_size = args.n_feats, 3
        self.args = args
        self.sub_mean = common.MeanShift(args.rgb_range)
        self.add_mean = common.MeanShift(args.rgb_range, sign=1)
        self.head = nn.Sequential(conv(args.n_colors, n_feats, kernel_size))
        m_body = [common.ResidualGroup(conv, n_feats, kernel_size, args.reduction, act=nn.ReLU(True), res_scale=1,
                                       n_resblocks=args.n_resblocks) for _ in range(args.n_resgroups)]
        m_body.append(conv(n_feats, n_feats, kernel_size))
        self.body = nn.Sequential(*m_body)
        self.P2W = common.Pos2Weight(inC=n_feats)

    def forward(self, x, pos_mat):
        x = self.sub_mean(x)
        x = self.head(x)
        res = self.body(x)
        res += x
        out = common.meta_upscale(self.P2W, res, pos_mat, self.scale)
        return self.add_mean(out)

    def set_scale(self, scale_idx):
        self.scale_idx = scale_idx
        self.scale = self.args.scale[scale_idx]
'''

_ARBRCAN = '''
import torch
import torch.nn as nn
import torch.nn.functional as F
from model import common


def make_model(args, parent=False):
    return ArbRCAN(args)


class SA_conv(nn.Module):
    def __init__(self, channels_in, channels_out, kernel_size=3, stride=1, padding=1, bias=False, num_experts=4):
        super(SA_conv, self).__init__()
        self.stride, self.padding = stride, padding
        self.routing = nn.Sequential(nn.Linear(2, 16), nn.ReLU(True), nn.Linear(16, num_experts), nn.Softmax(1))
        self.weight_pool = nn.Parameter(torch.randn(num_experts, channels_out, channels_in, kernel_size,
                                                    kernel_size) * 0.02)

    def forward(self, x, scale, scale2):
        r = self.routing(torch.tensor([[1 / scale, 1 / scale2]], dtype=x.dtype, device=x.device))
        w = (r.view(-1, 1, 1, 1, 1) * self.weight_pool).sum(0)
        return F.conv2d(x, w, None, self.stride, self.padding)


class SA_adapt(nn.Module):
    def __init__(self, channels):
        super(SA_adapt, self).__init__()
        self.mask = nn.Sequential(
            nn.Conv2d(channels, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(True), nn.AvgPool2d(2),
            nn.Conv2d(4, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(True),
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
            nn.Conv2d(4, 1, 3, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.adapt = SA_conv(channels, channels, 3, 1, 1)

    def forward(self, x, scale, scale2):
        mask = self.mask(x)
        adapted = self.adapt(x, scale, scale2)
        return x + adapted * mask


class SA_upsample(nn.Module):
    def __init__(self, channels, num_experts=4):
        super(SA_upsample, self).__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 16, 1, 1, 0, bias=True), nn.ReLU(True),
                                  nn.Conv2d(16, 16, 1, 1, 0, bias=True), nn.ReLU(True))
        self.routing = nn.Sequential(nn.Conv2d(16, num_experts, 1, 1, 0, bias=True), nn.Sigmoid())
        self.offset = nn.Conv2d(16, 2, 1, 1, 0, bias=True)
        self.weight_compress = nn.Parameter(torch.randn(num_experts, channels // 4, channels, 1, 1) * 0.05)
        self.weight_expand = nn.Parameter(torch.randn(num_experts, channels, channels // 4, 1, 1) * 0.05)

    def forward(self, x, scale, scale2):
        N, C, H, W = x.size()
        oh, ow = round(H * scale), round(W * scale2)
        ch = (torch.arange(oh, device=x.device, dtype=x.dtype) + 0.5) / scale
        cw = (torch.arange(ow, device=x.device, dtype=x.dtype) + 0.5) / scale2
        coor_h = (ch - torch.floor(ch + 1e-3) - 0.5).view(1, 1, oh, 1).expand(1, 1, oh, ow)
        coor_w = (cw - torch.floor(cw + 1e-3) - 0.5).view(1, 1, 1, ow).expand(1, 1, oh, ow)
        inp = torch.cat([torch.full_like(coor_h, 1 / scale2), torch.full_like(coor_h, 1 / scale), coor_h, coor_w], 1)
        emb = self.body(inp)
        offset = self.offset(emb)
        gy = (ch / H) * 2 - 1
        gx = (cw / W) * 2 - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing='ij')[::-1], -1).unsqueeze(0)
        grid = grid + offset.permute(0, 2, 3, 1) * 0.01
        fea0 = F.grid_sample(x, grid.expand(N, -1, -1, -1), padding_mode='zeros', align_corners=False)
        r = self.routing(emb)
        wc = torch.einsum('bkhw,koi->bhwoi', r, self.weight_compress[..., 0, 0])
        we = torch.einsum('bkhw,koi->bhwoi', r, self.weight_expand[..., 0, 0])
        f = torch.einsum('bhwoi,nihw->nohw', wc, fea0)
        f = torch.einsum('bhwoi,nihw->nohw', we, f)
        return fea0 + f


class ArbRCAN(nn.Module):
    def __init__(self, args, conv=common.default_conv):
        super(ArbRCAN, self).__init__()
        self.n_resgroups = 2
        n_resblocks = 2
        n_feats = 16
        kernel_size = 3
        reduction = 4
        act = nn.ReLU(True)
        if args.data_train == 'DIV2K':
            rgb_mean = (0.4488, 0.4371, 0.4040)
        rgb_std = (1.0, 1.0, 1.0)
        self.sub_mean = common.MeanShift(args.rgb_range, rgb_mean, rgb_std)
        self.add_mean = common.MeanShift(args.rgb_range, rgb_mean, rgb_std, 1)
        self.head = nn.Sequential(conv(args.n_colors, n_feats, kernel_size))
        modules_body = [common.ResidualGroup(conv, n_feats, kernel_size, reduction, act=act, res_scale=1,
                                             n_resblocks=n_resblocks) for _ in range(self.n_resgroups)]
        modules_body.append(conv(n_feats, n_feats, kernel_size))
        self.body = nn.Sequential(*modules_body)
        self.tail = nn.Sequential(*[None, conv(n_feats, args.n_colors, kernel_size)])
        self.K = 1
        self.sa_adapt = nn.Sequential(*[SA_adapt(n_feats) for _ in range(self.n_resgroups // self.K)])
        self.sa_upsample = SA_upsample(n_feats)

    def set_scale(self, scale, scale2):
        self.scale = scale
        self.scale2 = scale2

    def forward(self, x):
        x = self.sub_mean(x)
        x = self.head(x)
        res = x
        for i in range(self.n_resgroups):
            res = self.body[i](res)
            if (i + 1) % self.K == 0:
                res = self.sa_adapt[i](res, self.scale, self.scale2)
        res = self.body[-1](res)
        res += x
        res = self.sa_upsample(res, self.scale, self.scale2)
        x = self.tail[1](res)
        return self.add_mean(x)
'''

_MODEL_INIT = '''
import os
from importlib import import_module

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, args, ckp):
        super(Model, self).__init__()
        print('Making model...')
        self.scale = args.scale
        self.idx_scale = 0
        self.self_ensemble = args.self_ensemble
        self.chop = args.chop
        self.precision = args.precision
        self.cpu = args.cpu
        self.device = torch.device('cpu' if args.cpu else 'cuda')
        self.n_GPUs = args.n_GPUs
        module = import_module('model.' + args.model.lower())
        self.model = module.make_model(args).to(self.device)
        if args.precision == 'half':
            self.model.half()
        if not args.cpu and args.n_GPUs > 1:
            self.model = nn.DataParallel(self.model, range(args.n_GPUs))
        self.load(ckp.dir, pre_train=args.pre_train, resume=args.resume, cpu=args.cpu)

{forward}

    def get_model(self):
        if self.n_GPUs <= 1 or self.cpu:
            return self.model
        else:
            return self.model.module

    def state_dict(self, **kwargs):
        target = self.get_model()
        return target.state_dict(**kwargs)

{load}
'''

_META_FORWARD = '''    def forward(self, x, idx_scale, pos_mat):
        self.idx_scale = idx_scale
        target = self.get_model()
        if hasattr(target, 'set_scale'):
            target.set_scale(idx_scale)
        return self.model(x, pos_mat)'''

_ARB_FORWARD = '''    def forward(self, x):
        return self.model(x)'''

_META_LOAD = '''    def load(self, apath, pre_train='.', resume=-1, cpu=False):
        kwargs = {'map_location': lambda storage, loc: storage} if cpu else {}
        if resume == -1:
            self.get_model().load_state_dict(
                torch.load(os.path.join(apath, 'model', 'model_latest.pt'), **kwargs), strict=False)
        elif resume == 0:
            if pre_train != '.':
                print('Loading model from {}'.format(pre_train))
                self.get_model().load_state_dict(torch.load(pre_train, **kwargs), strict=False)
        else:
            self.get_model().load_state_dict(
                torch.load(os.path.join(apath, 'model', 'model_{}.pt'.format(resume)), **kwargs), strict=False)
            print('load_model_mode=2')'''

_ARB_LOAD = '''    def load(self, apath, pre_train='.', resume=-1, cpu=False):
        kwargs = {'map_location': lambda storage, loc: storage} if cpu else {}
        if resume == 0:
            if pre_train != '.':
                model_dict = self.get_model().state_dict()
                pretrained_dict = torch.load(pre_train)
                pretrained_dict = {k: v for k, v in pretrained_dict.items() if k in model_dict}
                model_dict.update(pretrained_dict)
                self.get_model().load_state_dict(model_dict)
                print('load from pre-trained model')
        elif resume > 0:
            self.get_model().load_state_dict(
                torch.load(os.path.join(apath, 'model', 'model_{}.pt'.format(resume)), **kwargs), strict=False)'''

_BROKEN_LOADER = '''
import random
import torch
from torch.utils.data.dataloader import DataLoader
from torch.utils.data.dataloader import _DataLoaderIter   # gone since PyTorch 1.2, as upstream


class MSDataLoader(DataLoader):
    pass
'''

_DATA_INIT = '''
from importlib import import_module
{loader_import}


class Data:
    def __init__(self, args):
        self.loader_train = None
        if not args.test_only:
            module_train = import_module('data.' + args.data_train.lower())
            trainset = getattr(module_train, args.data_train)(args)
            self.loader_train = MSDataLoader(args, trainset, batch_size=args.batch_size, shuffle=True,
                                             pin_memory=not args.cpu)
        if args.data_test in ['Set5', 'Set14', 'B100', 'Manga109', 'Urban100']:
            module_test = import_module('data.benchmark')
            testset = getattr(module_test, 'Benchmark')(args, name=args.data_test, train=False)
        else:
            module_test = import_module('data.' + args.data_test.lower())
            testset = getattr(module_test, args.data_test)(args, train=False)
        self.loader_test = MSDataLoader(args, testset, batch_size=1, shuffle=False, pin_memory=not args.cpu)
'''

_SRDATA = '''
import glob
import os
import random

import numpy as np
import torch
import torch.utils.data as data
from PIL import Image

ASYMM = {asymm}


def np2Tensor(*args, rgb_range=255):
    def _np2Tensor(img):
        np_transpose = np.ascontiguousarray(img.transpose((2, 0, 1)))
        tensor = torch.from_numpy(np_transpose).float()
        tensor.mul_(rgb_range / 255)
        return tensor
    return [_np2Tensor(a) for a in args]


class SRData(data.Dataset):
    def __init__(self, args, name='', train=True, benchmark=False):
        self.args = args
        self.name = name
        self.train = train
        self.benchmark = benchmark
        self.scale = args.scale
        self.scale2 = getattr(args, 'scale2', args.scale)
        self.idx_scale = 0
        self.first_epoch = False
        data_range = [r.split('-') for r in args.data_range.split('/')]
        data_range = data_range[0] if train else data_range[1]
        self.begin, self.end = list(map(lambda x: int(x), data_range))
        self._set_filesystem(args.dir_data)
        self.images_hr, self.images_lr = self._scan()
        if train:
            self.repeat = args.test_every // (len(self.images_hr) // args.batch_size)

    def _scan(self):
        names_hr = sorted(glob.glob(os.path.join(self.dir_hr, '*.png')))[self.begin - 1:self.end]
        names_lr = [[] for _ in self.scale]
        for f in names_hr:
            filename, _ = os.path.splitext(os.path.basename(f))
            for si, s in enumerate(self.scale):
                s2 = self.scale2[si]
                sub = 'X{:.2f}'.format(s) if s == s2 else 'X{:.2f}_X{:.2f}'.format(s, s2)
                names_lr[si].append(os.path.join(self.dir_lr, sub, filename + '.png'))
        return names_hr, names_lr

    def _set_filesystem(self, dir_data):
        self.apath = os.path.join(dir_data, self.name)
        self.dir_hr = os.path.join(self.apath, 'HR')
        self.dir_lr = os.path.join(self.apath, 'LR_bicubic')

    def __getitem__(self, idx):
        idx = idx % len(self.images_hr) if self.train else idx
        f_hr = self.images_hr[idx]
        f_lr = self.images_lr[self.idx_scale][idx]
        filename, _ = os.path.splitext(os.path.basename(f_hr))
        hr = np.array(Image.open(f_hr).convert('RGB'))
        lr = np.array(Image.open(f_lr).convert('RGB'))
        lr, hr = self.get_patch(lr, hr)
        lr_tensor, hr_tensor = np2Tensor(lr, hr, rgb_range=self.args.rgb_range)
        return lr_tensor, hr_tensor, filename

    def __len__(self):
        return len(self.images_hr) * self.repeat if self.train else len(self.images_hr)

    def get_patch(self, lr, hr):
        scale, scale2 = self.scale[self.idx_scale], self.scale2[self.idx_scale]
        rnd = (lambda v: int(round(v))) if ASYMM else int
        if self.train:
            ip = self.args.patch_size
            ih, iw = lr.shape[:2]
            iy, ix = random.randrange(0, ih - ip + 1), random.randrange(0, iw - ip + 1)
            ty, tx = rnd(scale * iy), rnd(scale2 * ix)
            lr = lr[iy:iy + ip, ix:ix + ip]
            hr = hr[ty:ty + rnd(scale * ip), tx:tx + rnd(scale2 * ip)]
        else:
            ih, iw = lr.shape[:2]
            hr = hr[0:int(ih * scale), 0:int(iw * scale2)]
        return lr, hr

    def set_scale(self, idx_scale):
        self.idx_scale = idx_scale
'''

_DIV2K = '''
from data import multiscalesrdata


class DIV2K(multiscalesrdata.SRData):
    def __init__(self, args, name='DIV2K', train=True, benchmark=False):
        super(DIV2K, self).__init__(args, name=name, train=train, benchmark=benchmark)
'''

_BENCHMARK = '''
import os
from data import multiscalesrdata as srdata


class Benchmark(srdata.SRData):
    def __init__(self, args, name='', train=True, benchmark=True):
        super(Benchmark, self).__init__(args, name=name, train=train, benchmark=True)

    def _set_filesystem(self, dir_data):
        self.apath = os.path.join(dir_data, 'benchmark', self.name)
        self.dir_hr = os.path.join(self.apath, 'HR')
        self.dir_lr = os.path.join(self.apath, 'LR_bicubic')
'''

_UTILITY = '''
import math
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import scipy.misc as misc
import torch
import torch.optim as optim
import torch.optim.lr_scheduler as lrs


class checkpoint():
    def __init__(self, args):
        self.args = args
        self.ok = True
        self.log = torch.Tensor()
        self.dir = './experiment/' + (args.save if args.load == '.' else args.load)
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.dir + '/model', exist_ok=True)
        os.makedirs(self.dir + '/results', exist_ok=True)
        self.log_file = open(self.dir + '/log.txt', 'a')

    def write_log(self, log, refresh=False):
        print(log)
        self.log_file.write(log + '\\n')

    def done(self):
        self.log_file.close()

    def save_results(self, filename, save_list, scale):
        filename = '{}/results/{}_x{}_'.format(self.dir, filename, scale)
        for v, p in zip(save_list, ('SR', 'LR', 'HR')):
            normalized = v[0].data.mul(255 / self.args.rgb_range)
            ndarr = normalized.byte().permute(1, 2, 0).cpu().numpy()
            misc.imsave('{}{}.png'.format(filename, p), ndarr)


def quantize(img, rgb_range):
    pixel_range = 255 / rgb_range
    return img.mul(pixel_range).clamp(0, 255).round().div(pixel_range)


def calc_psnr(sr, hr, scale, rgb_range, benchmark=False):
    s = max(scale) if isinstance(scale, (list, tuple)) else scale
    diff = (sr - hr).data.div(rgb_range)
    shave = math.ceil(s)
    if diff.size(1) > 1:
        convert = diff.new([65.738, 129.057, 25.064]).view(1, 3, 1, 1) / 256
        diff = diff.mul(convert).sum(dim=1, keepdim=True)
    valid = diff[:, :, shave:-shave, shave:-shave]
    mse = valid.pow(2).mean()
    return -10 * math.log10(max(float(mse), 1e-10))


def make_optimizer(args, my_model):
    trainable = filter(lambda x: x.requires_grad, my_model.parameters())
    return optim.Adam(trainable, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)


def make_scheduler(args, my_optimizer):
    return lrs.StepLR(my_optimizer, step_size=args.lr_decay, gamma=args.gamma)
'''

_LOSS = '''
import torch.nn as nn


class Loss(nn.modules.loss._Loss):
    def __init__(self, args, ckp):
        super(Loss, self).__init__()
        print('Preparing loss function:')
        self.l1 = nn.L1Loss()
        self.log = []

    def forward(self, sr, hr):
        loss = self.l1(sr, hr)
        self.log.append(loss.item())
        return loss
'''

_META_TRAINER = '''
import math
import os

import torch
import utility


class Trainer():
    def __init__(self, args, loader, my_model, my_loss, ckp):
        self.args = args
        self.scale = args.scale
        self.ckp = ckp
        self.loader_train = loader.loader_train
        self.loader_test = loader.loader_test
        self.model = my_model
        self.loss = my_loss
        self.optimizer = utility.make_optimizer(args, self.model)
        self.scheduler = utility.make_scheduler(args, self.optimizer)
        self.epoch = args.start_epoch
        self.error_last = 1e8

    @staticmethod
    def _axis(n, scale):
        s_int = math.ceil(scale)
        keep = torch.zeros(n * s_int, dtype=torch.bool)
        off = torch.zeros(n * s_int)
        count = [0] * n
        for o in range(int(scale * n)):
            h = min(int(o / scale + 1e-6), n - 1)
            i = count[h]
            if i >= s_int:
                continue
            count[h] += 1
            keep[h * s_int + i] = True
            off[h * s_int + i] = o / scale - h
        return keep, off

    def input_matrix_wpn(self, inH, inW, scale, add_scale=True):
        s_int = math.ceil(scale)
        keep_h, off_h = self._axis(inH, scale)
        keep_w, off_w = self._axis(inW, scale)
        pos = torch.zeros(inH * s_int, inW * s_int, 3)
        pos[..., 0] = 1.0 / scale
        pos[..., 1] = off_h.view(-1, 1)
        pos[..., 2] = off_w.view(1, -1)
        mask = keep_h.view(-1, 1) & keep_w.view(1, -1)
        return pos.view(1, -1, 3), mask

    def train(self):
        self.epoch += 1
        epoch = self.epoch
        self.model.train()
        device = torch.device('cpu' if self.args.cpu else 'cuda')
        for batch, (lr, hr, _, idx_scale) in enumerate(self.loader_train):
            lr, hr = lr.to(device), hr.to(device)
            N, C, H, W = lr.size()
            _, _, outH, outW = hr.size()
            scale_coord_map, mask = self.input_matrix_wpn(H, W, self.args.scale[idx_scale])
            scale_coord_map = scale_coord_map.to(device)
            self.optimizer.zero_grad()
            sr = self.model(lr, idx_scale, scale_coord_map)
            re_sr = torch.masked_select(sr, mask.to(device)).contiguous().view(N, C, outH, outW)
            loss = self.loss(re_sr, hr)
            loss.backward()
            self.optimizer.step()
            if (batch + 1) % self.args.print_every == 0:
                self.ckp.write_log('[Epoch {} batch {}] x{} L1: {:.4f}'.format(
                    epoch, batch + 1, self.args.scale[idx_scale], loss.item()))
        self.scheduler.step()
        torch.save(self.model.state_dict(), os.path.join(self.ckp.dir, 'model', 'model_{}.pt'.format(epoch)))

    def test(self):
        self.model.eval()
        device = torch.device('cpu' if self.args.cpu else 'cuda')
        with torch.no_grad():
            for idx_scale, scale in enumerate(self.scale):
                eval_acc = 0
                self.loader_test.dataset.set_scale(idx_scale)
                for idx_img, (lr, hr, filename, _) in enumerate(self.loader_test):
                    lr, hr = lr.to(device), hr.to(device)
                    N, C, H, W = lr.size()
                    outH, outW = int(H * scale), int(W * scale)
                    scale_coord_map, mask = self.input_matrix_wpn(H, W, scale)
                    sr = self.model(lr, idx_scale, scale_coord_map.to(device))
                    sr = torch.masked_select(sr, mask.to(device)).contiguous().view(N, C, outH, outW)
                    sr = utility.quantize(sr, self.args.rgb_range)
                    eval_acc += utility.calc_psnr(sr, hr, scale, self.args.rgb_range,
                                                  benchmark=self.loader_test.dataset.benchmark)
                    if self.args.save_results:
                        self.ckp.save_results(filename[0], [sr, lr, hr], scale)
                self.ckp.write_log('[{} x{}]\\tPSNR: {:.3f}'.format(
                    self.args.data_test, scale, eval_acc / len(self.loader_test)))

    def terminate(self):
        if self.args.test_only:
            self.test()
            return True
        return self.epoch >= self.args.epochs
'''

_ARB_TRAINER = '''
import math
import os
import matplotlib
matplotlib.use('TKAgg')
import torch
import utility


class Trainer():
    def __init__(self, args, loader, my_model, my_loss, ckp):
        self.args = args
        self.scale = args.scale
        self.ckp = ckp
        self.loader_train = loader.loader_train
        self.loader_test = loader.loader_test
        self.model = my_model
        self.loss = my_loss
        self.optimizer = utility.make_optimizer(args, self.model)
        self.scheduler = utility.make_scheduler(args, self.optimizer)
        self.epoch = args.start_epoch

    def train(self):
        self.epoch += 1
        epoch = self.epoch
        self.model.train()
        self.loader_train.dataset.first_epoch = (epoch == 1)
        device = torch.device('cpu' if self.args.cpu else 'cuda')
        for batch, (lr, hr, _, idx_scale) in enumerate(self.loader_train):
            lr, hr = lr.to(device), hr.to(device)
            scale = hr.size(2) / lr.size(2)
            scale2 = hr.size(3) / lr.size(3)
            self.optimizer.zero_grad()
            self.model.get_model().set_scale(scale, scale2)
            sr = self.model(lr)
            loss = self.loss(sr, hr)
            loss.backward()
            self.optimizer.step()
            if (batch + 1) % self.args.print_every == 0:
                self.ckp.write_log('[Epoch {} batch {}] x{}/x{} L1: {:.4f}'.format(
                    epoch, batch + 1, scale, scale2, loss.item()))
        self.scheduler.step()
        torch.save(self.model.state_dict(), os.path.join(self.ckp.dir, 'model', 'model_{}.pt'.format(epoch)))

    def test(self):
        self.model.eval()
        device = torch.device('cpu' if self.args.cpu else 'cuda')
        with torch.no_grad():
            for idx_scale, _ in enumerate(self.scale):
                self.loader_test.dataset.set_scale(idx_scale)
                scale, scale2 = self.args.scale[idx_scale], self.args.scale2[idx_scale]
                eval_psnr = 0
                for idx_img, (lr, hr, filename, _) in enumerate(self.loader_test):
                    lr, hr = lr.to(device), hr.to(device)
                    self.model.get_model().set_scale(scale, scale2)
                    sr = self.model(lr)
                    sr = utility.quantize(sr, self.args.rgb_range)
                    eval_psnr += utility.calc_psnr(sr, hr, [scale, scale2], self.args.rgb_range,
                                                   benchmark=self.loader_test.dataset.benchmark)
                if scale == scale2:
                    print('[{} x{}]\\tPSNR: {:.3f}'.format(self.args.data_test, scale,
                                                          eval_psnr / len(self.loader_test)))
                else:
                    print('[{} x{}/x{}]\\tPSNR: {:.3f}'.format(self.args.data_test, scale, scale2,
                                                              eval_psnr / len(self.loader_test)))

    def terminate(self):
        if self.args.test_only:
            self.test()
            return True
        return self.epoch >= self.args.epochs
'''

_META_MAIN = '''
import torch

import utility
import data
import model
import loss
from option import args
from trainer import Trainer

torch.manual_seed(args.seed)
checkpoint = utility.checkpoint(args)

if checkpoint.ok:
    loader = data.Data(args)
    model = model.Model(args, checkpoint)
    loss = loss.Loss(args, checkpoint) if not args.test_only else None
    t = Trainer(args, loader, model, loss, checkpoint)
    while not t.terminate():
        t.train()
    checkpoint.done()
'''

_ARB_MAIN = '''
import torch

import utility
import data
import model
import loss
from option import args
from trainer import Trainer

if __name__ == '__main__':
    torch.manual_seed(args.seed)
    checkpoint = utility.checkpoint(args)
    if checkpoint.ok:
        loader = data.Data(args)
        model = model.Model(args, checkpoint)
        loss = loss.Loss(args, checkpoint) if not args.test_only else None
        t = Trainer(args, loader, model, loss, checkpoint)
        while not t.terminate():
            t.train()
        checkpoint.done()
'''


def _fill(template: str, **values) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))


def _resize(img: np.ndarray, size) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(img).resize((size[1], size[0]), Image.BICUBIC))


def write_images(root: Path, pairs, n_train: int = 4, n_test: int = 3, hr_size: int = HR_SIZE, seed: int = 0):
    """Smooth random colour images, HR + bicubic LR, in DIV2K and benchmark/Set5 layouts."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for folder, n in (("DIV2K", n_train), ("benchmark/Set5", n_test)):
        for i in range(1, n + 1):
            low = rng.uniform(0, 255, size=(6, 6, 3)).astype(np.uint8)
            hr = _resize(low, (hr_size, hr_size))
            name = f"{i:04d}.png"
            (root / folder / "HR").mkdir(parents=True, exist_ok=True)
            Image.fromarray(hr).save(root / folder / "HR" / name)
            for s, s2 in pairs:
                sub = f"X{s:.2f}" if s == s2 else f"X{s:.2f}_X{s2:.2f}"
                (root / folder / "LR_bicubic" / sub).mkdir(parents=True, exist_ok=True)
                lr = _resize(hr, (round(hr_size / s), round(hr_size / s2)))
                Image.fromarray(lr).save(root / folder / "LR_bicubic" / sub / name)


def write_metasr_repo(root: Path, images: bool = True) -> Path:
    """A Meta-SR-like checkout (``--model metardn|metaedsr|metarcan``) at `root`."""
    root = Path(root)
    _write(root, "option.py", _fill(_OPTION_META, flavor="Meta-SR", n_gpus=3, model="metardn", pre_train=".",
                                                  save="meta"))
    _write(root, "model/__init__.py", _fill(_MODEL_INIT, forward=_META_FORWARD, load=_META_LOAD))
    _write(root, "model/common.py", _fill(_COMMON_PY, freeze="self.requires_grad = False"))
    _write(root, "model/metardn.py", _METARDN)
    _write(root, "model/metaedsr.py", _METAEDSR)
    _write(root, "model/metarcan.py", _METARCAN)
    _write(root, "dataloader.py", _BROKEN_LOADER)
    _write(root, "data/__init__.py", _fill(_DATA_INIT, loader_import="from dataloader import MSDataLoader"))
    _write(root, "data/multiscalesrdata.py", _fill(_SRDATA, asymm=False))
    _write(root, "data/div2k.py", _DIV2K)
    _write(root, "data/benchmark.py", _BENCHMARK)
    _write(root, "utility.py", _UTILITY)
    _write(root, "loss/__init__.py", _LOSS)
    _write(root, "trainer.py", _META_TRAINER)
    _write(root, "main.py", _META_MAIN)
    if images:
        write_images(root, [(s, s) for s in META_SCALES])
    return root


def write_arbsr_repo(root: Path, images: bool = True) -> Path:
    """An ArbSR-like checkout (``ArbRCAN``) at `root`."""
    root = Path(root)
    _write(root, "option.py", _fill(_OPTION_ARB, flavor="ArbSR", n_gpus=2, model="ArbRCAN",
                                                 pre_train="model/RCAN_BIX4.pt", save="ArbRCAN"))
    _write(root, "model/__init__.py", _fill(_MODEL_INIT, forward=_ARB_FORWARD, load=_ARB_LOAD))
    _write(root, "model/common.py", _fill(_COMMON_PY, 
        freeze="for p in self.parameters():\n            p.requires_grad = False"))
    _write(root, "model/arbrcan.py", _ARBRCAN)
    _write(root, "data/dataloader.py", _BROKEN_LOADER)
    _write(root, "data/__init__.py", _fill(_DATA_INIT, loader_import="from data.dataloader import MSDataLoader"))
    _write(root, "data/multiscalesrdata.py", _fill(_SRDATA, asymm=True))
    _write(root, "data/div2k.py", _DIV2K)
    _write(root, "data/benchmark.py", _BENCHMARK)
    _write(root, "utility.py", _UTILITY)
    _write(root, "loss/__init__.py", _LOSS)
    _write(root, "trainer.py", _ARB_TRAINER)
    _write(root, "main.py", _ARB_MAIN)
    if images:
        write_images(root, ARB_PAIRS)
    return root


def meta_args(**overrides):
    """argparse-like namespace for building the look-alike Meta-SR nets directly."""
    import argparse

    ns = argparse.Namespace(scale=list(META_SCALES), G0=16, RDNkSize=3, RDNconfig="T", n_colors=3, rgb_range=255,
                            n_resblocks=2, n_feats=16, n_resgroups=2, reduction=4, res_scale=1.0,
                            data_train="DIV2K")
    for k, v in overrides.items():
        setattr(ns, k, v)
    return ns


__all__ = ["write_metasr_repo", "write_arbsr_repo", "write_images", "meta_args", "META_SCALES", "ARB_PAIRS"]


@contextlib.contextmanager
def repo_modules(root, *names):
    """Import `names` from the look-alike repo at `root` (repo first on sys.path, clashing
    module names purged before and after)."""
    from anysr_plugin.launch import purge_modules

    saved = list(sys.path)
    purge_modules()
    sys.path.insert(0, str(root))
    try:
        yield [importlib.import_module(n) for n in names]
    finally:
        sys.path[:] = saved
        purge_modules()
