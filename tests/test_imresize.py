"""Bicubic protocols: PIL path == torchvision's LIIF path; MATLAB path == independent loops,
known properties, and real MATLAB output (a crop of Set5 'bird')."""
import math
import os

import numpy as np
import pytest
import torch

from anysr_plugin.imresize import (
    ImageError,
    cubic,
    imresize_matlab,
    matlab_output_size,
    matlab_weights,
    resize_pil,
    to_uint8_truncate,
)

DATA = os.path.join(os.path.dirname(__file__), "data")


# ----------------------------------------------------------------------------- PIL
def _torchvision_resize_fn(img, size):
    """LIIF's resize_fn, verbatim in behaviour: ToTensor(Resize(size, BICUBIC)(ToPILImage(img)))."""
    transforms = pytest.importorskip("torchvision.transforms")
    from PIL import Image

    return transforms.ToTensor()(transforms.Resize(size, Image.BICUBIC)(transforms.ToPILImage()(img)))


@pytest.mark.parametrize("in_hw,out_hw", [((48, 48), (23, 23)), ((50, 37), (17, 29)), ((20, 20), (61, 45)),
                                          ((96, 96), (48, 48))])
def test_resize_pil_equals_torchvision_path(in_hw, out_hw):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, *in_hw, generator=g)
    x[0, 0, 0], x[1, 0, 0] = 1.0, 0.0  # the range ends
    ref = _torchvision_resize_fn(x, out_hw)
    out = resize_pil(x, out_hw)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.equal(out, ref)


def test_resize_pil_int_size_is_square_and_batch_matches_loop():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 30, 30, generator=g)
    out = resize_pil(x, 12)
    assert out.shape == (2, 3, 12, 12)
    for b in range(2):
        assert torch.equal(out[b], _torchvision_resize_fn(x[b], 12))


def test_quantisation_truncates_like_to_pil_image():
    x = torch.tensor([0.0, 0.999, 1.0, 0.5, 254.9 / 255]).view(1, 1, 5)
    assert to_uint8_truncate(x).flatten().tolist() == [0, 254, 255, 127, 254]
    # a same-size PIL resize is the identity, so only the truncation is visible
    img = torch.full((3, 4, 4), 0.999)
    assert torch.allclose(resize_pil(img, (4, 4)), torch.full((3, 4, 4), 254 / 255))


# ----------------------------------------------------------------------------- MATLAB reference
def _ref_kernel_weights(in_len, out_len, scale, antialias=True):
    """Per output pixel, the (source index, weight) list -- written from the formula, with loops."""
    res = []
    shrink = scale < 1 and antialias
    width = 4.0 / scale if shrink else 4.0
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = []
        for k in range(int(math.ceil(width)) + 2):
            j = left + k
            d = u - j
            wgt = scale * float(cubic(np.array(scale * d))) if shrink else float(cubic(np.array(d)))
            taps.append((min(max(j, 1), in_len) - 1, wgt))
        s = sum(w for _, w in taps)
        res.append([(j, w / s) for j, w in taps])
    return res


def _ref_imresize(a, out_h, out_w, sh, sw, uint8):
    """Two explicit 1-D passes over a (H, W) float64 array: rows first unless sw < sh."""
    a = np.round(a * 255) if uint8 else a.copy()

    def pass_rows(arr, out_len, scale):
        taps = _ref_kernel_weights(arr.shape[0], out_len, scale)
        out = np.zeros((out_len, arr.shape[1]))
        for i in range(out_len):
            for j in range(arr.shape[1]):
                out[i, j] = sum(w * arr[k, j] for k, w in taps[i])
        return np.floor(np.clip(out, 0, 255) + 0.5) if uint8 else out

    if sh <= sw:
        a = pass_rows(a, out_h, sh)
        a = pass_rows(a.T, out_w, sw).T
    else:
        a = pass_rows(a.T, out_w, sw).T
        a = pass_rows(a, out_h, sh)
    return a / 255 if uint8 else a


@pytest.mark.parametrize("uint8", [False, True])
@pytest.mark.parametrize("hw,kw", [((13, 11), dict(scale=1 / 3)), ((12, 17), dict(scale=(1 / 1.5, 1 / 2.5))),
                                   ((9, 10), dict(size=(4, 7))), ((6, 5), dict(size=(11, 8))),
                                   ((7, 9), dict(scale=(0.5, 1.7)))])
def test_imresize_matlab_matches_loop_reference(hw, kw, uint8):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, *hw, generator=g, dtype=torch.float64)
    out = imresize_matlab(x, uint8=uint8, **kw)[0, 0].numpy()
    H, W = hw
    if "scale" in kw:
        s = kw["scale"]
        sh, sw = (s, s) if not isinstance(s, tuple) else s
        oh, ow = math.ceil(sh * H), math.ceil(sw * W)
    else:
        oh, ow = kw["size"]
        sh, sw = oh / H, ow / W
    ref = _ref_imresize(x[0, 0].numpy(), oh, ow, sh, sw, uint8)
    assert out.shape == (oh, ow)
    if uint8:
        # both sides land on the 8-bit grid; they may only differ at exact .5 ties
        assert np.abs(out - ref).max() <= 1 / 255 + 1e-12
        assert np.mean(out != ref) < 0.02
    else:
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


def test_imresize_matlab_channels_and_batch_are_independent():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 10, 14, generator=g)
    out = imresize_matlab(x, scale=0.5)
    assert out.shape == (2, 3, 5, 7) and out.dtype == x.dtype
    one = imresize_matlab(x[1:2, 2:3], scale=0.5)
    assert torch.equal(out[1:2, 2:3], one)
    assert torch.equal(imresize_matlab(x[0], scale=0.5), out[0])  # (C,H,W) input


@pytest.mark.parametrize("kw", [dict(scale=1 / 3), dict(scale=(0.4, 0.8)), dict(size=(7, 20)), dict(scale=2.5)])
@pytest.mark.parametrize("uint8", [False, True])
def test_constant_image_stays_constant(kw, uint8):
    x = torch.full((1, 3, 15, 12), 100 / 255, dtype=torch.float64)
    out = imresize_matlab(x, uint8=uint8, **kw)
    assert torch.allclose(out, torch.full_like(out, 100 / 255), atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_integer_downsample_of_linear_ramp_is_block_centre(k):
    # f(j) = j on 0-based columns; MATLAB's sample position for output x (1-based) is
    # u = k*x + 0.5*(1-k) (1-based), i.e. the centre of block x.  A symmetric normalised
    # kernel reproduces a linear function exactly away from the borders.
    W = 12 * k
    x = torch.arange(W, dtype=torch.float64).view(1, 1, 1, W).expand(1, 1, 3, W).contiguous()
    out = imresize_matlab(x, size=(3, W // k), uint8=False)[0, 0, 1]
    centres = torch.tensor([k * (i + 1) + 0.5 * (1 - k) - 1 for i in range(W // k)], dtype=torch.float64)
    margin = 2  # the kernel reaches 2k pixels, i.e. 2 output pixels
    assert torch.allclose(out[margin:-margin], centres[margin:-margin], atol=1e-10)
    assert not torch.allclose(out[:1], centres[:1])  # edges are clamped, not linear


def test_weights_rows_sum_to_one_and_cubic_values():
    for n_in, n_out, s in [(10, 5, 0.5), (7, 13, 13 / 7), (9, 4, 1 / 2.2)]:
        m = matlab_weights(n_in, n_out, s)
        assert m.shape == (n_out, n_in)
        np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(cubic(np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])),
                               [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0])


def test_output_size_follows_matlab_ceil():
    # Meta-SR: a 512 px image is cropped to 508 when 512 mod s != 0; X1.10 gives 462 px
    assert matlab_output_size((508, 508), 1 / 1.1) == (462, 462)
    assert matlab_output_size((512, 344), 0.5) == (256, 172)
    assert matlab_output_size((340, 228), 1 / 3) == (114, 76)


def test_matches_real_matlab_output_on_set5_crop():
    """Top-left 64x64 of Set5 'bird' (img_002_SRF.png) and the matching corners of the
    MATLAB-made LR files ``LR_bicubic/X{2,3,4}.00`` from the Meta-SR repository: only LR
    pixels whose kernel stays inside the crop are stored, so they must match bit for bit."""
    d = np.load(os.path.join(DATA, "set5_bird_matlab_crop.npz"))
    hr = torch.from_numpy(d["hr"]).permute(2, 0, 1).double() / 255
    for s in (2, 3, 4):
        lr = torch.from_numpy(d[f"lr_x{s}"]).permute(2, 0, 1).double() / 255
        n = lr.shape[-1]
        out = imresize_matlab(hr, scale=1 / s)[:, :n, :n]
        assert torch.equal((out * 255).round(), (lr * 255).round()), f"x{s}"
    # the float (no per-pass rounding) variant is measurably different from MATLAB
    out = imresize_matlab(hr, scale=0.5, uint8=False)[:, :29, :29]
    lr2 = torch.from_numpy(d["lr_x2"]).permute(2, 0, 1).double()
    assert not torch.equal((out * 255).round(), lr2)


def test_bad_arguments_raise():
    x = torch.rand(3, 8, 8)
    with pytest.raises(ImageError):
        imresize_matlab(x)
    with pytest.raises(ImageError):
        imresize_matlab(x, scale=0.5, size=(4, 4))
    with pytest.raises(ImageError):
        imresize_matlab(x, scale=-1)
    with pytest.raises(ImageError):
        imresize_matlab(torch.rand(8, 8), scale=0.5)
    with pytest.raises(ImageError):
        resize_pil(torch.rand(4, 8, 8), (4, 4))
