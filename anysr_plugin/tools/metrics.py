"""PSNR and LPIPS exactly as the SR literature computes them.

PSNR follows the upstream ``calc_psnr`` conventions (LIIF / LTE / SRNO ``utils.calc_psnr``,
EDSR / Meta-SR / ArbSR ``utility.calc_psnr``), images in [0, 1]:

* ``protocol="benchmark"`` (Set5, Set14, B100, Urban100, Manga109): the *difference*
  image is converted to luma with ``[65.738, 129.057, 25.064] / 256`` (BT.601; the +16
  offset cancels in a difference), and ``shave`` pixels are cut from every border.
  ``shave = scale`` for integer scales (LIIF/SRNO).  For non-integer or asymmetric
  scales the shave is ``ceil(s)`` per axis, as Meta-SR / ArbSR do; for integer scales the
  two rules agree.  Official AnySR shaves ``int(s) + 1`` instead -- pass ``shave=`` to
  reproduce that.
* ``protocol="div2k"``: RGB, ``shave = ceil(s) + 6`` per axis (``scale + 6`` upstream).
* ``protocol=None``: RGB, no shave.

PSNR is ``-10 log10(mean(diff**2))`` per image.  LIIF averages per-image values at test
time (``batch_size: 1``), which is what ``reduction="mean"`` does here.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Optional, Sequence, Tuple, Union

import torch

from ..runtime.control import scale_pair
from ..runtime.errors import CheckpointError, ConfigError
from .imresize import ImageError

__all__ = [
    "Y_COEFFS",
    "rgb_to_y",
    "shave_for",
    "psnr",
    "LPIPSMetric",
    "BACKBONE_FILES",
    "backbone_path",
]

#: BT.601 luma coefficients used by every upstream ``calc_psnr`` (divide by 256).
Y_COEFFS = (65.738, 129.057, 25.064)

ScaleArg = Union[float, int, Tuple[float, float], Sequence[float]]


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of an RGB image in [0, 1]: ``16/255 + (65.738 R + 129.057 G + 25.064 B)/256``.

    ``img`` is ``(..., 3, H, W)``; returns ``(..., 1, H, W)`` in [16/255, ~235/255]
    (MATLAB ``rgb2ycbcr`` / EDSR convention).
    """
    if img.dim() < 3 or img.shape[-3] != 3:
        raise ImageError(f"rgb_to_y needs (..., 3, H, W), got {tuple(img.shape)}")
    w = img.new_tensor(Y_COEFFS).view(3, 1, 1) / 256.0
    return (img * w).sum(dim=-3, keepdim=True) + 16.0 / 255.0


def shave_for(protocol: Optional[str], scale: ScaleArg) -> Tuple[int, int]:
    """Border (rows, cols) cut before PSNR: ``ceil(s)`` (benchmark), ``ceil(s)+6`` (div2k), 0 (None)."""
    if protocol is None:
        return (0, 0)
    sh, sw = scale_pair(scale)
    # 1e-9 guards 2.0000000001 produced by float arithmetic on "integer" scales
    ch, cw = math.ceil(sh - 1e-9), math.ceil(sw - 1e-9)
    if protocol == "benchmark":
        return (ch, cw)
    if protocol == "div2k":
        return (ch + 6, cw + 6)
    raise ConfigError(f"unknown PSNR protocol {protocol!r}; use 'benchmark', 'div2k' or None")


def psnr(
    sr: torch.Tensor,
    hr: torch.Tensor,
    protocol: Optional[str] = "benchmark",
    scale: ScaleArg = 1,
    shave: Optional[Union[int, Tuple[int, int]]] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """PSNR in dB of ``sr`` against ``hr``, both ``(B, C, H, W)`` (or ``(C, H, W)``) in [0, 1].

    ``protocol`` picks the colour space and border (module docstring); ``shave`` overrides
    the border (int or ``(rows, cols)``).  ``reduction="none"`` returns the per-image
    ``(B,)`` tensor, ``"mean"`` their mean.  Identical images give ``inf``.  Single-channel
    inputs are compared as they are (no luma conversion), as upstream does.
    """
    if sr.shape != hr.shape:
        raise ImageError(f"sr and hr shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    if sr.dim() == 3:
        sr, hr = sr.unsqueeze(0), hr.unsqueeze(0)
    if sr.dim() != 4:
        raise ImageError(f"expected (B, C, H, W) images, got {tuple(sr.shape)}")
    if reduction not in ("mean", "none"):
        raise ConfigError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if shave is None:
        sh, sw = shave_for(protocol, scale)
    elif isinstance(shave, (tuple, list)):
        sh, sw = (int(v) for v in shave)
    else:
        sh = sw = int(shave)
    if protocol not in (None, "benchmark", "div2k"):
        raise ConfigError(f"unknown PSNR protocol {protocol!r}; use 'benchmark', 'div2k' or None")

    diff = sr.to(torch.float64) - hr.to(torch.float64)
    if protocol == "benchmark" and diff.shape[1] > 1:
        if diff.shape[1] != 3:
            raise ImageError(f"benchmark protocol needs 1 or 3 channels, got {diff.shape[1]}")
        w = diff.new_tensor(Y_COEFFS).view(1, 3, 1, 1) / 256.0
        diff = (diff * w).sum(dim=1, keepdim=True)
    H, W = diff.shape[-2:]
    if 2 * sh >= H or 2 * sw >= W:
        raise ImageError(f"shave ({sh}, {sw}) leaves nothing of a {H}x{W} image")
    valid = diff[..., sh:H - sh, sw:W - sw]
    mse = valid.pow(2).flatten(1).mean(dim=1)
    out = -10.0 * torch.log10(mse)  # mse == 0 -> +inf
    out = out.to(torch.float32)
    return out.mean() if reduction == "mean" else out


# ----------------------------------------------------------------------------- LPIPS
#: torchvision ImageNet weights each LPIPS trunk needs, as torch.hub caches them.
BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
_BACKBONE_URLS = {k: "https://download.pytorch.org/models/" + v for k, v in BACKBONE_FILES.items()}


def backbone_path(net: str = "alex") -> str:
    """Where torch.hub (hence torchvision) looks for the trunk weights of ``net``."""
    if net not in BACKBONE_FILES:
        raise ConfigError(f"unknown LPIPS net {net!r}; use one of {sorted(BACKBONE_FILES)}")
    return os.path.join(torch.hub.get_dir(), "checkpoints", BACKBONE_FILES[net])


def _load_state(path: str) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"LPIPS weights file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable / pickled objects refused by weights_only
        raise CheckpointError(f"cannot read LPIPS weights {path}: {e}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return sd


class LPIPSMetric(torch.nn.Module):
    """LPIPS distance (Zhang et al. 2018) via the ``lpips`` package, never downloading anything.

    The lpips package ships its linear-layer weights but fetches the ImageNet trunk
    through torchvision at construction time; this wrapper always builds lpips with a
    random trunk and then loads the trunk itself, from (in this order) ``weights_path``
    or the torch.hub cache file :func:`backbone_path`.  When neither exists a
    :class:`~anysr_plugin.errors.CheckpointError` names the file and the folder.

    ``weights_path`` may hold the torchvision trunk (``features.*`` keys, e.g.
    ``alexnet-owt-7be5be79.pth``) or a full LPIPS state dict (``net.slice*`` and
    ``lin*`` keys).  ``pnet_rand=True`` (or ``pretrained_backbone=False``) keeps a
    randomly initialised trunk, seeded by ``seed`` -- for tests only; its values are not
    comparable with published LPIPS.  Inputs are images in [0, 1]; they are mapped to
    [-1, 1] as lpips expects.  ``forward`` returns one distance per image, shape ``(B,)``.
    """

    def __init__(
        self,
        weights_path: Optional[str] = None,
        net: str = "alex",
        pretrained_backbone: bool = True,
        pnet_rand: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        if net not in BACKBONE_FILES:
            raise ConfigError(f"unknown LPIPS net {net!r}; use one of {sorted(BACKBONE_FILES)}")
        random_trunk = bool(pnet_rand) or not pretrained_backbone
        self.net_name = net
        self.random_trunk = random_trunk

        sd = None
        if weights_path is not None:
            sd = _load_state(os.fspath(weights_path))
        elif not random_trunk:
            path = backbone_path(net)
            if not os.path.isfile(path):
                folder = os.path.dirname(path)
                raise CheckpointError(
                    f"LPIPS needs the ImageNet {net} trunk weights, which cannot be downloaded here. "
                    f"Put the file {BACKBONE_FILES[net]} (from {_BACKBONE_URLS[net]}) in the folder "
                    f"{folder} (i.e. {path}), or pass a local file with --lpips-weights PATH "
                    f"(LPIPSMetric(weights_path=PATH)); the file may be the torchvision trunk or a "
                    f"full LPIPS state dict."
                )
            sd = _load_state(path)

        import lpips  # imported late: it pulls in torchvision

        full = sd is not None and any(k.startswith("lin0.") or k.startswith("lins.") for k in sd)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # pnet_rand=True: lpips never asks torchvision for pretrained weights (no download);
            # pretrained=True loads the linear layers from the file bundled with the package.
            lin_file = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{net}.pth")
            if not full and not os.path.isfile(lin_file):
                raise CheckpointError(
                    f"the lpips package has no linear weights at {lin_file}; reinstall lpips or pass a "
                    f"full LPIPS state dict with --lpips-weights PATH"
                )
            with warnings.catch_warnings():  # torchvision's 'pretrained' deprecation notices
                warnings.simplefilter("ignore")
                self.model = lpips.LPIPS(
                    pretrained=not full, net=net, version="0.1", pnet_rand=True, verbose=False
                )
        if sd is not None:
            if full:
                missing, unexpected = self.model.load_state_dict(sd, strict=False)
                bad = [k for k in missing if not k.startswith("lins.")] + list(unexpected)
                if bad:
                    raise CheckpointError(f"LPIPS state dict does not fit lpips.LPIPS({net!r}): {bad[:5]}")
            else:
                self._load_trunk(sd, weights_path or backbone_path(net))
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _load_trunk(self, sd: dict, origin) -> None:
        # lpips' trunk slices keep torchvision's module indices: net.sliceK.{i}.* == features.{i}.*
        own = self.model.net.state_dict()
        new = {}
        for k in own:
            _, idx, param = k.split(".", 2)
            src = f"features.{idx}.{param}"
            if src not in sd:
                raise CheckpointError(
                    f"{origin} is neither a torchvision {self.net_name} trunk nor a full LPIPS state "
                    f"dict: key {src!r} is missing"
                )
            if tuple(sd[src].shape) != tuple(own[k].shape):
                raise CheckpointError(
                    f"{origin}: {src} has shape {tuple(sd[src].shape)}, expected {tuple(own[k].shape)}"
                )
            new[k] = sd[src]
        self.model.net.load_state_dict(new, strict=True)

    @torch.no_grad()
    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if sr.shape != hr.shape:
            raise ImageError(f"sr and hr shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
        if sr.dim() == 3:
            sr, hr = sr.unsqueeze(0), hr.unsqueeze(0)
        if sr.dim() != 4 or sr.shape[1] != 3:
            raise ImageError(f"LPIPS needs (B, 3, H, W) RGB images, got {tuple(sr.shape)}")
        dev = next(self.model.parameters()).device
        a = sr.to(dev, torch.float32) * 2 - 1
        b = hr.to(dev, torch.float32) * 2 - 1
        return self.model(a, b).flatten()
