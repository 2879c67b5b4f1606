"""Evaluation data: image folders, paired LR/HR folders, LR synthesis, sample photographs.

LR synthesis follows LIIF's ``sr-implicit-downsampled`` wrapper (also SRNO's test path):
for a scale ``(s_h, s_w)`` the LR size is ``floor(H / s + 1e-9)``, the HR is cropped from
the top-left to ``round(h_lr * s)`` (Python's ``round``, as upstream) and the LR is the
bicubic resize of that crop.  ``method="pil"`` is LIIF/SRNO's PIL bicubic;
``method="matlab"`` is MATLAB ``imresize`` (the EDSR / Meta-SR / ArbSR benchmark LR).
Images are float tensors ``(3, H, W)`` in [0, 1]; nothing here draws randomness
without an explicit seed.
"""
from __future__ import annotations

import math
import os
import re
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..runtime.control import scale_pair
from ..runtime.errors import ConfigError, ScaleError
from ..runtime.files import write_atomic
from .imresize import ImageError, imresize_matlab, resize_pil

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_images",
    "load_image",
    "save_image",
    "ImageFolder",
    "PairedFolders",
    "lr_hr_sizes",
    "make_lr",
    "bicubic_upsample",
    "skimage_photos",
    "sample_images",
    "chunked_apply",
    "SKIMAGE_PHOTOS",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

ScaleArg = Union[float, Tuple[float, float], Sequence[float]]


# ----------------------------------------------------------------------------- files
def list_images(folder: Union[str, os.PathLike]) -> List[str]:
    """Sorted paths of the image files (png/jpg/jpeg/bmp/tif) directly inside ``folder``."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ImageError(f"image folder not found: {folder}")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ImageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return [os.path.join(folder, n) for n in names]


#: Pillow modes of 16-bit greyscale images (PNG, TIFF); ``convert("RGB")`` would clip them to white
_GREY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def load_image(path: Union[str, os.PathLike]) -> torch.Tensor:
    """An image file as a ``(3, H, W)`` float tensor in [0, 1] (converted to RGB, like upstream).

    16-bit greyscale is divided by 65535 (Pillow's own conversion clips it, which made every
    such image white); 32-bit integer or float images have no known range and are refused, and
    so is an image of more pixels than Pillow's ``Image.MAX_IMAGE_PIXELS`` (a header that claims
    100000x100000 pixels would otherwise be decoded into 30 GB)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # above the limit: refused, not warned
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageError(f"cannot read image {path}: {size}, more than the limit of {Image.MAX_IMAGE_PIXELS:,} "
                         "(Pillow's Image.MAX_IMAGE_PIXELS, a guard against decompression bombs); if the image is "
                         "genuine, split it or raise PIL.Image.MAX_IMAGE_PIXELS") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    try:
        with im:
            if im.mode in _GREY16_MODES or (im.mode == "I" and im.format == "PNG"):
                grey = np.asarray(im).astype(np.float32) / np.float32(65535)
                return torch.from_numpy(np.ascontiguousarray(grey)).unsqueeze(0).expand(3, -1, -1).clone()
            if im.mode in ("I", "F"):
                raise ImageError(f"cannot read image {path}: Pillow mode {im.mode!r} (32-bit integer or float "
                                 "samples) has no known value range; save it as an 8- or 16-bit image")
            arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255)


def save_image(img: torch.Tensor, path: Union[str, os.PathLike]) -> None:
    """Save a ``(3, H, W)`` [0, 1] tensor as an 8-bit image (rounded), atomically."""
    from PIL import Image

    if img.dim() != 3 or img.shape[0] != 3:
        raise ImageError(f"save_image needs (3, H, W), got {tuple(img.shape)}")
    arr = (img.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    fmt = Image.registered_extensions().get(os.path.splitext(os.fspath(path))[1].lower())
    if fmt is None:
        raise ImageError(f"cannot save {os.fspath(path)}: Pillow knows no image format for its suffix; use e.g. .png")
    write_atomic(path, lambda f: Image.fromarray(arr).save(f, format=fmt))


class ImageFolder:
    """The images of a folder, sorted by name, loaded lazily: ``folder[i] -> (name, (3,H,W))``."""

    def __init__(self, folder: Union[str, os.PathLike], first_k: Optional[int] = None):
        self.paths = list_images(folder)
        if first_k is not None:
            self.paths = self.paths[:first_k]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tuple[str, torch.Tensor]:
        p = self.paths[i]
        return os.path.basename(p), load_image(p)

    def __iter__(self) -> Iterator[Tuple[str, torch.Tensor]]:
        for i in range(len(self)):
            yield self[i]


class PairedFolders:
    """LR and HR folders paired by sorted order (as LIIF's ``paired-image-folders``).

    ``pairs[i] -> (hr_name, lr, hr)``; the HR is cropped top-left to ``round(lr_size*s)``
    where ``s`` is ``scale`` if given, else the integer ratio ``H_hr // H_lr`` (LIIF's
    ``sr-implicit-paired``).  Counts must match.
    """

    def __init__(self, lr_folder, hr_folder, scale: Optional[ScaleArg] = None, first_k: Optional[int] = None):
        self.lr = list_images(lr_folder)
        self.hr = list_images(hr_folder)
        if len(self.lr) != len(self.hr):
            raise ImageError(
                f"{len(self.lr)} LR images in {lr_folder} but {len(self.hr)} HR images in {hr_folder}"
            )
        if first_k is not None:  # the first K pairs (counts checked on the whole folders)
            self.lr, self.hr = self.lr[:first_k], self.hr[:first_k]
        self.scale = None if scale is None else scale_pair(scale)

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, i: int) -> Tuple[str, torch.Tensor, torch.Tensor]:
        lr, hr = load_image(self.lr[i]), load_image(self.hr[i])
        h, w = lr.shape[-2:]
        if self.scale is None:
            sh, sw = hr.shape[-2] // h, hr.shape[-1] // w
        else:
            sh, sw = self.scale
        th, tw = round(h * sh), round(w * sw)
        if th > hr.shape[-2] or tw > hr.shape[-1] or th < 1 or tw < 1:
            raise ImageError(
                f"{self.hr[i]} is {tuple(hr.shape[-2:])}, too small for LR {(h, w)} at scale {(sh, sw)}"
            )
        return os.path.basename(self.hr[i]), lr, hr[:, :th, :tw]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


# ----------------------------------------------------------------------------- LR synthesis
def lr_hr_sizes(hr_size: Tuple[int, int], scale: ScaleArg) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """``((h_lr, w_lr), (h_hr, w_hr))`` for an HR of ``hr_size`` at ``scale`` (LIIF's rule)."""
    sh, sw = scale_pair(scale)
    H, W = hr_size
    h_lr, w_lr = math.floor(H / sh + 1e-9), math.floor(W / sw + 1e-9)
    if h_lr < 1 or w_lr < 1:
        raise ScaleError(f"scale {scale!r} leaves no LR pixel of a {H}x{W} image")
    return (h_lr, w_lr), (round(h_lr * sh), round(w_lr * sw))


def make_lr(hr: torch.Tensor, scale: ScaleArg, method: str = "pil") -> Tuple[torch.Tensor, torch.Tensor]:
    """``(lr, hr_cropped)`` for one ``(3, H, W)`` image or a ``(B, 3, H, W)`` batch.

    ``method="pil"`` reproduces LIIF/SRNO exactly (uint8 truncation + Pillow bicubic);
    ``method="matlab"`` is MATLAB ``imresize`` to the exact LR size (the kernel scale is
    ``lr/hr`` per axis, as ArbSR's LR generator does; for integer scales this equals
    ``imresize(hr, 1/s)``).
    """
    (h_lr, w_lr), (h_hr, w_hr) = lr_hr_sizes(tuple(hr.shape[-2:]), scale)
    crop = hr[..., :h_hr, :w_hr]
    if method == "pil":
        lr = resize_pil(crop, (h_lr, w_lr))
    elif method == "matlab":
        lr = imresize_matlab(crop, size=(h_lr, w_lr))
    else:
        raise ImageError(f"unknown bicubic method {method!r}; use 'pil' or 'matlab'")
    return lr, crop


def bicubic_upsample(lr: torch.Tensor, size: Tuple[int, int], method: str = "pil") -> torch.Tensor:
    """The bicubic baseline: resize ``lr`` to the HR ``size`` with the same protocol as the LR."""
    if method == "pil":
        return resize_pil(lr, size)
    if method == "matlab":
        return imresize_matlab(lr, size=size)
    if method == "torch":  # float bicubic (a = -0.75), no quantisation; for quick looks only
        x = lr if lr.dim() == 4 else lr.unsqueeze(0)
        y = torch.nn.functional.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False)
        y = y.clamp(0, 1)
        return y if lr.dim() == 4 else y[0]
    raise ImageError(f"unknown bicubic method {method!r}; use 'pil', 'matlab' or 'torch'")


# ----------------------------------------------------------------------------- sample photos
#: RGB (or grey, expanded to RGB) photographs bundled with scikit-image (no download needed).
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "immunohistochemistry")


def skimage_photos(names: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
    """Real photographs from ``skimage.data`` as ``{name: (3, H, W) float in [0, 1]}``.

    Grey images are repeated to three channels, RGBA drops alpha.  Needs scikit-image
    (the ``test`` extra); it ships these files, so nothing is downloaded.
    """
    try:
        import skimage.data as skd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImageError("skimage_photos needs scikit-image: pip install scikit-image") from e
    out = {}
    for n in names if names is not None else SKIMAGE_PHOTOS:
        fn = getattr(skd, n, None)
        if fn is None:
            raise ImageError(f"skimage.data has no image {n!r}")
        arr = np.asarray(fn())
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        arr = arr[:, :, :3]
        if arr.dtype != np.uint8:
            raise ImageError(f"skimage.data.{n} is {arr.dtype}, expected uint8")
        out[n] = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div(255)
    return out


def sample_images(n: int, size: Union[int, Tuple[int, int]] = 64, seed: int = 0,
                  names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """``(n, 3, h, w)`` random crops of the scikit-image photographs, reproducible by ``seed``.

    Crop ``i`` comes from photo ``i % len(photos)`` at a position drawn from a private
    ``torch.Generator`` (the global RNG is untouched).
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    photos = list(skimage_photos(names).values())
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for i in range(int(n)):
        p = photos[i % len(photos)]
        H, W = p.shape[-2:]
        if h > H or w > W:
            raise ImageError(f"crop {h}x{w} is larger than a {H}x{W} photo")
        y = int(torch.randint(0, H - h + 1, (1,), generator=g))
        x = int(torch.randint(0, W - w + 1, (1,), generator=g))
        out.append(p[:, y:y + h, x:x + w])
    return torch.stack(out) if out else torch.empty(0, 3, h, w)


# ----------------------------------------------------------------------------- memory
def chunked_apply(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, chunk: int,
                  dim: int = 1) -> torch.Tensor:
    """``fn(*tensors)`` computed on slices of ``chunk`` along ``dim`` and concatenated.

    This is LIIF's ``batched_predict`` pattern (``dim=1`` over queries of ``(B, Q, 2)``
    coords; for SRNO's ``(B, H, W, 2)`` grids ``dim=1`` chunks HR rows).  Arguments that
    must not be chunked (e.g. SRNO's ``(B, 2)`` cell) belong in ``fn`` via a closure.
    Peak memory is bounded by one chunk's output plus the concatenated result.
    """
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    if not tensors:
        raise ConfigError("chunked_apply needs at least one tensor to chunk")
    n = tensors[0].shape[dim]
    if any(t.shape[dim] != n for t in tensors):
        raise ImageError(f"tensors differ in size along dim {dim}: {[tuple(t.shape) for t in tensors]}")
    outs = []
    for start in range(0, n, chunk):
        outs.append(fn(*(t.narrow(dim, start, min(chunk, n - start)) for t in tensors)))
    return torch.cat(outs, dim=dim)
