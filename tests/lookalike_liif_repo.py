"""Writes look-alike LIIF / LTE / SRNO upstream repositories into a folder, for launcher tests.

Written here from the documented facts (docs/upstream.md),
never copied: a ``models/`` registry with ``register`` / ``make(spec, args, load_sd)``
(strict top-level ``load_state_dict``), EDSR-baseline / RDN encoders (the package's
reference look-alikes, which keep the upstream key names), LIIF-like ``liif`` / ``lte`` /
``metasr`` wrappers with ``(B, Q, 2)`` coord/cell (call contract only, not their functions),
an ``lte-fast`` with ``(B, H, W, 2)`` coord and ``(B, 2)`` cell, and a **faithful** SRNO
``sronet`` + ``galerkin`` (written here, independently of ``anysr_plugin.reference.srno``,
from upstream SRNO's documented code: unbiased-std LayerNorm on k and v, ``x + MLP(x +
attn(x))``, fc1/fc2 through 256 hidden channels), a ``datasets/`` registry with
per-sample-scale wrappers, ``utils.py``, a tiny ``train.py`` (``train_liif.py`` for LIIF)
saving ``{'model': spec + sd, 'optimizer': {...}, 'epoch'}`` and supporting ``resume``,
and ``test.py`` with ``batched_predict`` (``gen_feat`` first) / ``eval_psnr`` that
prints ``result: PSNR``.  Every script calls ``.cuda()`` unconditionally, as upstream.
Images are generated deterministically (smooth gradients + texture) as PNG files.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

MODELS_MODELS = '''
import copy

models = {}


def register(name):
    def decorator(cls):
        models[name] = cls
        return cls
    return decorator


def make(model_spec, args=None, load_sd=False):
    if args is not None:
        model_args = copy.deepcopy(model_spec['args'])
        model_args.update(args)
    else:
        model_args = model_spec['args']
    model = models[model_spec['name']](**model_args)
    if load_sd:
        model.load_state_dict(model_spec['sd'])
    return model
'''

MODELS_ENCODERS = '''
from anysr_plugin.reference.encoders import EDSR, RDN

from .models import register


@register('edsr-baseline')
def make_edsr_baseline(n_resblocks=16, n_feats=64, res_scale=1, scale=2, no_upsampling=False, rgb_range=1):
    assert no_upsampling, 'the look-alike encoder only runs at LR resolution'
    return EDSR(n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale, rgb_range=rgb_range)


@register('rdn')
def make_rdn(G0=64, RDNkSize=3, RDNconfig='B', scale=2, no_upsampling=False, D=None, C=None, G=None):
    assert no_upsampling
    return RDN(G0=G0, RDNkSize=RDNkSize, RDNconfig=RDNconfig, D=D, C=C, G=G)
'''

MODELS_MLP = '''
import torch.nn as nn

from .models import register


@register('mlp')
class MLP(nn.Module):
    def __init__(self, in_dim, out_dim, hidden_list):
        super().__init__()
        layers, last = [], in_dim
        for hidden in hidden_list:
            layers += [nn.Linear(last, hidden), nn.ReLU()]
            last = hidden
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        shape = x.shape[:-1]
        return self.layers(x.view(-1, x.shape[-1])).view(*shape, -1)
'''

MODELS_LIIF = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from models import register


class _Implicit(nn.Module):
    """gen_feat(inp) -> self.feat; query_rgb(coord (B,Q,2), cell (B,Q,2)) -> (B,Q,3)."""

    def __init__(self, encoder_spec, imnet_spec=None, cell_decode=True):
        super().__init__()
        self.encoder = models.make(encoder_spec)
        self.cell_decode = cell_decode
        in_dim = self.encoder.out_dim + 2 + (2 if cell_decode else 0)
        self.imnet = models.make(imnet_spec, args={'in_dim': in_dim})

    def gen_feat(self, inp):
        self.inp = inp
        self.feat = self.encoder(inp)
        return self.feat

    def query_rgb(self, coord, cell=None):
        feat = self.feat
        grid = coord.flip(-1).unsqueeze(1)
        q = F.grid_sample(feat, grid, mode='nearest', align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        parts = [q, coord]
        if self.cell_decode:
            rel_cell = cell.clone()
            rel_cell[:, :, 0] *= feat.shape[-2]
            rel_cell[:, :, 1] *= feat.shape[-1]
            parts.append(rel_cell)
        torch.zeros(1).cuda()  # upstream calls .cuda() unconditionally here
        return self.imnet(torch.cat(parts, dim=-1))

    def forward(self, inp, coord, cell):
        self.gen_feat(inp)
        return self.query_rgb(coord, cell)


@register('liif')
class LIIF(_Implicit):
    pass


@register('lte')
class LTE(_Implicit):
    pass


@register('metasr')
class MetaSR(_Implicit):
    pass
'''

MODELS_GALERKIN = '''
import torch
import torch.nn as nn

from models import register


class HeadNorm(nn.Module):
    """SRNO's LayerNorm: (x - mean) / (unbiased std + eps) on the last axis, then weight, bias."""

    def __init__(self, shape, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.eps = eps

    def forward(self, t):
        centred = t - t.mean(-1, keepdim=True)
        return self.weight * (centred / (t.std(-1, keepdim=True) + self.eps)) + self.bias


@register('galerkin')
class simple_attn(nn.Module):
    """out = x + MLP(x + attn(x)); attn = q (k^T v) / N per head, k and v normalised."""

    def __init__(self, midc, heads):
        super().__init__()
        self.heads, self.headc = heads, midc // heads
        self.qkv_proj = nn.Conv2d(midc, 3 * midc, 1)
        self.o_proj1 = nn.Conv2d(midc, midc, 1)
        self.o_proj2 = nn.Conv2d(midc, midc, 1)
        self.kln = HeadNorm((heads, 1, self.headc))
        self.vln = HeadNorm((heads, 1, self.headc))
        self.act = nn.GELU()

    def forward(self, x, name='0'):
        n, c, h, w = x.shape
        t = self.qkv_proj(x).flatten(2).transpose(1, 2)                 # (n, hw, 3c)
        t = t.reshape(n, h * w, self.heads, 3 * self.headc).transpose(1, 2)
        q = t[..., :self.headc]
        k = self.kln(t[..., self.headc:2 * self.headc])
        v = self.vln(t[..., 2 * self.headc:])
        mixed = q @ (k.transpose(-2, -1) @ v / (h * w))                  # (n, heads, hw, headc)
        mixed = mixed.transpose(1, 2).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return x + self.o_proj2(self.act(self.o_proj1(mixed + x)))
'''

MODELS_SRONET = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from models import register
from models.galerkin import simple_attn
from utils import make_coord


@register('sronet')
class SRNO(nn.Module):
    """SRNO as upstream documents it: the four nearest latent codes area-weighted, their
    relative coords and the relative cell -> conv00 -> two Galerkin blocks -> fc2(gelu(fc1))
    (hidden 256) + bilinear LR residual.  conv00 takes (C + 2) * 4 + 2 inputs (upstream
    writes 266 for its 64-channel encoders)."""

    def __init__(self, encoder_spec, width=256, blocks=16):
        super().__init__()
        self.width = width
        self.encoder = models.make(encoder_spec)
        self.conv00 = nn.Conv2d((self.encoder.out_dim + 2) * 4 + 2, width, 1)
        self.conv0 = simple_attn(width, blocks)
        self.conv1 = simple_attn(width, blocks)
        self.fc1 = nn.Conv2d(width, 256, 1)
        self.fc2 = nn.Conv2d(256, 3, 1)

    def gen_feat(self, inp):
        self.inp = inp
        self.feat = self.encoder(inp)
        return self.feat

    def query_rgb(self, coord, cell):
        feat = self.feat
        n, _, h, w = feat.shape
        lr_pos = make_coord((h, w)).cuda().permute(2, 0, 1).unsqueeze(0).expand(n, 2, h, w)
        rels, codes, areas = [], [], []
        for dy in (-1, 1):
            for dx in (-1, 1):
                moved = coord.clone()
                moved[..., 0] += dy / h + 1e-6
                moved[..., 1] += dx / w + 1e-6
                moved = moved.clamp(-1 + 1e-6, 1 - 1e-6).flip(-1)
                code = F.grid_sample(feat, moved, mode='nearest', align_corners=False)
                centre = F.grid_sample(lr_pos, moved, mode='nearest', align_corners=False)
                rel = coord.permute(0, 3, 1, 2) - centre
                rel = torch.cat([rel[:, :1] * h, rel[:, 1:] * w], dim=1)
                rels.append(rel)
                codes.append(code)
                areas.append((rel[:, 0] * rel[:, 1]).abs() + 1e-9)
        total = sum(areas)
        opposite = [areas[3], areas[2], areas[1], areas[0]]
        codes = [c * (a / total).unsqueeze(1) for c, a in zip(codes, opposite)]
        rel_cell = cell * torch.tensor([h, w], dtype=cell.dtype, device=cell.device)
        x = torch.cat(rels + codes + [rel_cell[:, :, None, None].repeat(1, 1, *coord.shape[1:3])], dim=1)
        x = self.conv1(self.conv0(self.conv00(x), 0), 1)
        out = self.fc2(F.gelu(self.fc1(x)))
        return out + F.grid_sample(self.inp, coord.flip(-1), mode='bilinear', padding_mode='border',
                                   align_corners=False)

    def forward(self, inp, coord, cell):
        self.gen_feat(inp)
        return self.query_rgb(coord, cell)
'''

MODELS_LTEP = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from models import register


@register('lte-fast')
class LTEP(nn.Module):
    """coord (B,H,W,2), cell (B,2) -> (B,3,H,W), with an LR bilinear residual (call shape only)."""

    def __init__(self, encoder_spec, width=16, blocks=2):
        super().__init__()
        self.encoder = models.make(encoder_spec)
        c = self.encoder.out_dim
        self.conv00 = nn.Conv2d(c + 4, width, 1)
        self.conv0 = nn.Conv2d(width, width, 1)
        self.fc1 = nn.Conv2d(width, width, 1)
        self.fc2 = nn.Conv2d(width, 3, 1)

    def gen_feat(self, inp):
        self.inp = inp
        self.feat = self.encoder(inp)
        return self.feat

    def query_rgb(self, coord, cell):
        feat = self.feat
        b, h, w, _ = coord.shape
        grid = coord.flip(-1)
        q = F.grid_sample(feat, grid, mode='bilinear', padding_mode='border', align_corners=False)
        rel_cell = cell.clone()
        rel_cell[:, 0] *= feat.shape[-2]
        rel_cell[:, 1] *= feat.shape[-1]
        x = torch.cat([q, coord.permute(0, 3, 1, 2), rel_cell[:, :, None, None].expand(-1, -1, h, w)], dim=1)
        x = self.conv0(F.gelu(self.conv00(x)))
        ret = self.fc2(F.gelu(self.fc1(x)))
        return ret + F.grid_sample(self.inp, grid, mode='bilinear', padding_mode='border', align_corners=False)

    def forward(self, inp, coord, cell):
        self.gen_feat(inp)
        return self.query_rgb(coord, cell)
'''

MODELS_INIT = '''
from .models import register, make
from . import encoders, mlp, liif, galerkin, sronet, ltep
'''

DATASETS_DATASETS = '''
import copy

datasets = {}


def register(name):
    def decorator(cls):
        datasets[name] = cls
        return cls
    return decorator


def make(dataset_spec, args=None):
    if args is not None:
        dataset_args = copy.deepcopy(dataset_spec['args'])
        dataset_args.update(args)
    else:
        dataset_args = dataset_spec['args']
    return datasets[dataset_spec['name']](**dataset_args)
'''

DATASETS_IMAGE_FOLDER = '''
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from datasets import register


@register('image-folder')
class ImageFolder(Dataset):
    def __init__(self, root_path, repeat=1, first_k=None, cache='none'):
        files = sorted(os.listdir(root_path))
        if first_k is not None:
            files = files[:first_k]
        self.images = [torch.from_numpy(np.asarray(Image.open(os.path.join(root_path, f)).convert('RGB'))
                                        .copy()).permute(2, 0, 1).float() / 255 for f in files]
        self.repeat = repeat

    def __len__(self):
        return len(self.images) * self.repeat

    def __getitem__(self, idx):
        return self.images[idx % len(self.images)]
'''

DATASETS_WRAPPERS = '''
import math
import random

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datasets import register
from utils import make_coord, to_pixel_samples


def resize_fn(img, size):
    return F.interpolate(img[None], size=size, mode='bicubic', align_corners=False, antialias=True)[0].clamp(0, 1)


def _crop(img, inp_size, scale_min, scale_max):
    s = random.uniform(scale_min, scale_max)
    if inp_size is None:
        h_lr, w_lr = math.floor(img.shape[-2] / s + 1e-9), math.floor(img.shape[-1] / s + 1e-9)
        crop_hr = img[:, :round(h_lr * s), :round(w_lr * s)]
        return resize_fn(crop_hr, (h_lr, w_lr)), crop_hr
    w_hr = round(inp_size * s)
    x0 = random.randint(0, img.shape[-2] - w_hr)
    y0 = random.randint(0, img.shape[-1] - w_hr)
    crop_hr = img[:, x0:x0 + w_hr, y0:y0 + w_hr]
    return resize_fn(crop_hr, (inp_size, inp_size)), crop_hr


@register('sr-implicit-downsampled')
class SRImplicitDownsampled(Dataset):
    """Per-item scale; coord/cell (Q, 2), gt (Q, 3)."""

    def __init__(self, dataset, inp_size=None, scale_min=1, scale_max=None, augment=False, sample_q=None):
        self.dataset, self.inp_size, self.sample_q = dataset, inp_size, sample_q
        self.scale_min, self.scale_max = scale_min, scale_max if scale_max is not None else scale_min

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        crop_lr, crop_hr = _crop(self.dataset[idx], self.inp_size, self.scale_min, self.scale_max)
        hr_coord, hr_rgb = to_pixel_samples(crop_hr.contiguous())
        if self.sample_q is not None:
            keep = torch.randperm(len(hr_coord))[:self.sample_q]
            hr_coord, hr_rgb = hr_coord[keep], hr_rgb[keep]
        cell = torch.ones_like(hr_coord)
        cell[:, 0] *= 2 / crop_hr.shape[-2]
        cell[:, 1] *= 2 / crop_hr.shape[-1]
        return {'inp': crop_lr, 'coord': hr_coord, 'cell': cell, 'gt': hr_rgb}


@register('sr-implicit-downsampled-fast')
class SRImplicitDownsampledFast(SRImplicitDownsampled):
    """Per-item scale; coord (h, w, 2), cell (2,), gt (3, h, w)."""

    def __getitem__(self, idx):
        crop_lr, crop_hr = _crop(self.dataset[idx], self.inp_size, self.scale_min, self.scale_max)
        h, w = crop_hr.shape[-2:]
        coord = make_coord((h, w))
        gt = crop_hr
        if self.inp_size is not None:  # random subset of inp_size x inp_size HR pixels
            keep = torch.randperm(h * w)[:self.inp_size * self.inp_size]
            coord = coord.view(-1, 2)[keep].view(self.inp_size, self.inp_size, 2)
            gt = crop_hr.reshape(3, -1)[:, keep].view(3, self.inp_size, self.inp_size)
        cell = torch.tensor([2 / h, 2 / w], dtype=torch.float32)
        return {'inp': crop_lr, 'coord': coord, 'cell': cell, 'gt': gt}
'''

DATASETS_INIT = '''
from .datasets import register, make
from . import image_folder, wrappers
'''

UTILS = '''
import os

import torch


def make_coord(shape):
    seqs = []
    for n in shape:
        r = 1 / n
        seqs.append(-1 + r + 2 * r * torch.arange(n).float())
    return torch.stack(torch.meshgrid(*seqs, indexing='ij'), dim=-1)


def to_pixel_samples(img):
    coord = make_coord(img.shape[-2:]).view(-1, 2)
    rgb = img.view(3, -1).permute(1, 0)
    return coord, rgb


def make_optimizer(param_list, optimizer_spec, load_sd=False):
    optimizer = {'adam': torch.optim.Adam, 'sgd': torch.optim.SGD}[optimizer_spec['name']](
        param_list, **optimizer_spec['args'])
    if load_sd:
        optimizer.load_state_dict(optimizer_spec['sd'])
    return optimizer


def calc_psnr(sr, hr):
    mse = (sr - hr).pow(2).mean()
    return -10 * torch.log10(mse)
'''

TEST = '''
import argparse
import os

import torch
import yaml
from torch.utils.data import DataLoader

import datasets
import models
import utils

FAST = {FAST}


def batched_predict(model, inp, coord, cell, bsize):
    with torch.no_grad():
        model.gen_feat(inp)
        n = coord.shape[1]
        ql, preds = 0, []
        while ql < n:
            qr = min(ql + bsize, n)
            if FAST:
                preds.append(model.query_rgb(coord[:, ql:qr], cell))
            else:
                preds.append(model.query_rgb(coord[:, ql:qr], cell[:, ql:qr]))
            ql = qr
        return torch.cat(preds, dim=2 if FAST else 1)


def eval_psnr(loader, model, data_norm=None, eval_type=None, eval_bsize=None, verbose=False):
    model.eval()
    total, n = 0.0, 0
    for batch in loader:
        for k, v in batch.items():
            batch[k] = v.cuda()
        inp = (batch['inp'] - 0.5) / 0.5
        if eval_bsize is None:
            with torch.no_grad():
                pred = model(inp, batch['coord'], batch['cell'])
        else:
            pred = batched_predict(model, inp, batch['coord'], batch['cell'], eval_bsize)
        pred = (pred * 0.5 + 0.5).clamp(0, 1)
        total += float(utils.calc_psnr(pred, batch['gt'])) * inp.shape[0]
        n += inp.shape[0]
    return total / n


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--config')
    parser.add_argument('--model')
    parser.add_argument('--gpu', default='0')
    args = parser.parse_args()
    os.environ['CUDA_VISIBLE_DEVICES'] = args.gpu
    with open(args.config, 'r') as f:
        config = yaml.load(f, Loader=yaml.FullLoader)
    spec = config['test_dataset']
    dataset = datasets.make(spec['dataset'])
    dataset = datasets.make(spec['wrapper'], args={'dataset': dataset})
    loader = DataLoader(dataset, batch_size=spec['batch_size'], num_workers=2, pin_memory=True)
    model_spec = torch.load(args.model)['model']
    model = models.make(model_spec, load_sd=True).cuda()
    res = eval_psnr(loader, model, data_norm=config.get('data_norm'), eval_type=config.get('eval_type'),
                    eval_bsize=config.get('eval_bsize'))
    print('result: {:.4f}'.format(res))
'''

TRAIN = '''
import argparse
import os

import torch
import torch.nn as nn
import yaml
from torch.utils.data import DataLoader

import datasets
import models
import utils
from test import eval_psnr


def make_data_loader(spec, tag=''):
    dataset = datasets.make(spec['dataset'])
    dataset = datasets.make(spec['wrapper'], args={'dataset': dataset})
    return DataLoader(dataset, batch_size=spec['batch_size'], shuffle=(tag == 'train'), num_workers=2,
                      pin_memory=True)


def prepare_training():
    if config.get('resume') is not None and os.path.exists(config['resume']):
        sv_file = torch.load(config['resume'])
        model = models.make(sv_file['model'], load_sd=True).cuda()
        optimizer = utils.make_optimizer(model.parameters(), sv_file['optimizer'], load_sd=True)
        epoch_start = sv_file['epoch'] + 1
    else:
        model = models.make(config['model']).cuda()
        optimizer = utils.make_optimizer(model.parameters(), config['optimizer'])
        epoch_start = 1
    return model, optimizer, epoch_start


def main(config_, save_path):
    global config
    config = config_
    os.makedirs(save_path, exist_ok=True)
    torch.manual_seed(0)
    train_loader = make_data_loader(config['train_dataset'], tag='train')
    val_loader = make_data_loader(config['val_dataset'], tag='val')
    model, optimizer, epoch_start = prepare_training()
    n_gpus = len(os.environ['CUDA_VISIBLE_DEVICES'].split(','))
    if n_gpus > 1:
        model = nn.parallel.DataParallel(model)
    for epoch in range(epoch_start, config['epoch_max'] + 1):
        model.train()
        losses = []
        for batch in train_loader:
            for k, v in batch.items():
                batch[k] = v.cuda()
            inp = (batch['inp'] - 0.5) / 0.5
            gt = (batch['gt'] - 0.5) / 0.5
            pred = model(inp, batch['coord'], batch['cell'])
            loss = nn.L1Loss()(pred, gt)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model_ = model.module if n_gpus > 1 else model
        model_spec = config['model']
        model_spec['sd'] = model_.state_dict()
        optimizer_spec = config['optimizer']
        optimizer_spec['sd'] = optimizer.state_dict()
        torch.save({'model': model_spec, 'optimizer': optimizer_spec, 'epoch': epoch},
                   os.path.join(save_path, 'epoch-last.pth'))
        val = eval_psnr(val_loader, model_, eval_bsize=config.get('eval_bsize'))
        print('epoch {}: train loss={:.4f} val psnr={:.4f} optimizer params={}'.format(
            epoch, sum(losses) / len(losses), val, sum(len(g['params']) for g in optimizer.param_groups)))


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--config')
    parser.add_argument('--name', default=None)
    parser.add_argument('--gpu', default='0')
    args = parser.parse_args()
    os.environ['CUDA_VISIBLE_DEVICES'] = args.gpu
    with open(args.config, 'r') as f:
        config = yaml.load(f, Loader=yaml.FullLoader)
    save_name = args.name or '_' + os.path.basename(args.config).split('.')[0]
    main(config, os.path.join('./save', save_name))
'''

#: repo kind -> (train script name, SR model name, uses (B,H,W,2)/(B,2) queries)
KINDS = {"liif": ("train_liif.py", "liif", False), "lte": ("train.py", "lte", False),
         "srno": ("train.py", "sronet", True)}


def write_images(folder: Path, n: int, size: int, seed: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        f = rng.uniform(2, 6, size=3)
        img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (f[c] * xx + (c + i) * yy)) for c in range(3)], -1)
        img = img + 0.05 * rng.standard_normal(img.shape)
        Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


def write_repo(root: Path, kind: str = "liif") -> Path:
    """Write a look-alike upstream repo of `kind` ('liif', 'lte', 'srno') under `root`."""
    train_script, _, fast = KINDS[kind]
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "models/__init__.py": MODELS_INIT, "models/models.py": MODELS_MODELS, "models/encoders.py": MODELS_ENCODERS,
        "models/mlp.py": MODELS_MLP, "models/liif.py": MODELS_LIIF, "models/sronet.py": MODELS_SRONET,
        "models/galerkin.py": MODELS_GALERKIN, "models/ltep.py": MODELS_LTEP,
        "datasets/__init__.py": DATASETS_INIT, "datasets/datasets.py": DATASETS_DATASETS,
        "datasets/image_folder.py": DATASETS_IMAGE_FOLDER, "datasets/wrappers.py": DATASETS_WRAPPERS,
        "utils.py": UTILS, "test.py": TEST.replace("{FAST}", str(fast)), train_script: TRAIN,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    write_images(root / "load" / "train", 2, 40, seed=1)
    write_images(root / "load" / "valid", 1, 36, seed=2)
    return root


def train_config(kind: str = "liif", encoder: str = "edsr-baseline", **extra) -> dict:
    """A tiny training config for the look-alike repo (2 blocks, 16 channels)."""
    _, model_name, fast = KINDS[kind]
    enc_args = {"no_upsampling": True}
    if encoder == "edsr-baseline":
        enc_args.update(n_resblocks=2, n_feats=16)
    else:
        enc_args.update(G0=16, D=2, C=2, G=16)
    model_args = {"encoder_spec": {"name": encoder, "args": enc_args}}
    if fast:
        model_args.update(width=8, blocks=1)
    else:
        model_args["imnet_spec"] = {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16]}}
    wrapper = "sr-implicit-downsampled-fast" if fast else "sr-implicit-downsampled"
    train_wrap = {"inp_size": 8, "scale_max": 4, "augment": False}
    if not fast:
        train_wrap["sample_q"] = 64
    cfg = {
        "train_dataset": {"dataset": {"name": "image-folder", "args": {"root_path": "./load/train", "repeat": 2}},
                          "wrapper": {"name": wrapper, "args": train_wrap}, "batch_size": 2},
        "val_dataset": {"dataset": {"name": "image-folder", "args": {"root_path": "./load/valid"}},
                        "wrapper": {"name": wrapper, "args": {"scale_min": 2, "scale_max": 2}}, "batch_size": 1},
        "data_norm": {"inp": {"sub": [0.5], "div": [0.5]}, "gt": {"sub": [0.5], "div": [0.5]}},
        "model": {"name": model_name, "args": model_args},
        "optimizer": {"name": "adam", "args": {"lr": 1.0e-3}},
        "epoch_max": 1,
        "multi_step_lr": {"milestones": [200, 400], "gamma": 0.5},
        "epoch_val": 1, "epoch_save": 1,
    }
    cfg.update(extra)
    return cfg


def test_config(kind: str = "liif", scale: int = 2, eval_bsize=None) -> dict:
    _, _, fast = KINDS[kind]
    wrapper = "sr-implicit-downsampled-fast" if fast else "sr-implicit-downsampled"
    cfg = {"test_dataset": {"dataset": {"name": "image-folder", "args": {"root_path": "./load/valid"}},
                            "wrapper": {"name": wrapper, "args": {"scale_min": scale, "scale_max": scale}},
                            "batch_size": 1},
           "eval_type": f"div2k-{scale}",
           "data_norm": {"inp": {"sub": [0.5], "div": [0.5]}, "gt": {"sub": [0.5], "div": [0.5]}}}
    if eval_bsize is not None:
        cfg["eval_bsize"] = eval_bsize
    return cfg
