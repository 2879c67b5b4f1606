"""PSNR against hand-computed values for every protocol; LPIPS without any download."""
import math
import os

import pytest
import torch

from anysr_plugin.errors import CheckpointError, ConfigError, ScaleError
from anysr_plugin.imresize import ImageError
from anysr_plugin.metrics import BACKBONE_FILES, LPIPSMetric, psnr, rgb_to_y, shave_for

W_R, W_G, W_B = 65.738 / 256, 129.057 / 256, 25.064 / 256


def _pair(h=16, w=16, b=1):
    hr = torch.zeros(b, 3, h, w, dtype=torch.float64)
    return hr.clone(), hr


# ----------------------------------------------------------------------------- Y
def test_rgb_to_y_black_white_and_primaries():
    assert torch.allclose(rgb_to_y(torch.zeros(3, 2, 2)), torch.full((1, 2, 2), 16 / 255))
    white = rgb_to_y(torch.ones(1, 3, 2, 2))
    assert white.shape == (1, 1, 2, 2)
    assert abs(white[0, 0, 0, 0].item() - 235 / 255) < 1e-3  # BT.601 nominal white
    red = torch.zeros(3, 1, 1)
    red[0] = 1
    assert abs(rgb_to_y(red).item() - (16 / 255 + W_R)) < 1e-7
    with pytest.raises(ImageError):
        rgb_to_y(torch.zeros(4, 2, 2))


# ----------------------------------------------------------------------------- shave
def test_shave_rules():
    assert shave_for("benchmark", 2) == (2, 2)
    assert shave_for("benchmark", 4.0) == (4, 4)
    assert shave_for("benchmark", 2.5) == (3, 3)                  # ceil, Meta-SR/ArbSR
    assert shave_for("benchmark", (1.5, 4.0)) == (2, 4)           # per axis
    assert shave_for("benchmark", 3.0000000000000004) == (3, 3)   # float noise on an integer
    assert shave_for("div2k", 2) == (8, 8)
    assert shave_for("div2k", (2.2, 3)) == (9, 9)
    assert shave_for(None, 4) == (0, 0)
    with pytest.raises(ConfigError):
        shave_for("set5", 2)
    with pytest.raises(ScaleError):
        shave_for("benchmark", 0)


# ----------------------------------------------------------------------------- PSNR
def test_benchmark_psnr_hand_computed_and_border_ignored():
    sr, hr = _pair(16, 16)
    sr[:, 0, 2:-2, 2:-2] = 0.1          # red error inside
    sr[:, :, :2, :] = 0.9               # big errors only in the 2-px border
    sr[:, :, -2:, :] = 0.9
    sr[:, :, :, :2] = 0.9
    sr[:, :, :, -2:] = 0.9
    expected = -20 * math.log10(0.1 * W_R)
    assert psnr(sr, hr, "benchmark", scale=2).item() == pytest.approx(expected, abs=1e-5)
    # shave 1 (scale 1) sees part of the border -> much lower
    assert psnr(sr, hr, "benchmark", scale=1).item() < expected - 10


def test_benchmark_psnr_luma_of_mixed_channels():
    sr, hr = _pair(10, 10)
    sr[:, 0] = 0.2
    sr[:, 1] = -0.1
    sr[:, 2] = 0.05
    dy = 0.2 * W_R - 0.1 * W_G + 0.05 * W_B
    assert psnr(sr, hr, "benchmark", scale=3).item() == pytest.approx(-20 * math.log10(abs(dy)), abs=1e-5)


def test_div2k_psnr_is_rgb_with_scale_plus_6():
    sr, hr = _pair(20, 20)
    sr[:, 0, 8:-8, 8:-8] = 0.1              # only the red channel of the 4x4 centre
    sr[:, :, :8] = 1.0                      # border of 8 = 2 + 6 is ignored
    mse = 0.01 / 3
    assert psnr(sr, hr, "div2k", scale=2).item() == pytest.approx(-10 * math.log10(mse), abs=1e-5)


def test_no_protocol_uses_every_pixel_in_rgb():
    sr, hr = _pair(4, 4)
    sr[:, 1, 0, 0] = 0.5
    mse = 0.25 / (3 * 16)
    assert psnr(sr, hr, None).item() == pytest.approx(-10 * math.log10(mse), abs=1e-5)


def test_asymmetric_scale_shaves_per_axis():
    sr, hr = _pair(12, 20)
    sr[:, 0, 2:-2, 4:-4] = 0.1
    sr[:, :, :, :4] = 1.0  # inside the column border (4) but outside the row border (2)
    got = psnr(sr, hr, "benchmark", scale=(1.5, 3.3)).item()
    assert got == pytest.approx(-20 * math.log10(0.1 * W_R), abs=1e-5)


def test_shave_override_reproduces_anysr_release_rule():
    sr, hr = _pair(16, 16)
    sr[:, 0, 2, 5] = 1.0  # row 2: inside LIIF's x2 window, outside AnySR's int(s)+1 = 3
    assert math.isfinite(psnr(sr, hr, "benchmark", scale=2).item())
    assert psnr(sr, hr, "benchmark", scale=2, shave=3).item() == math.inf


def test_per_image_values_and_mean():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 3, 24, 24, generator=g)
    sr = (hr + 0.05 * torch.randn(3, 3, 24, 24, generator=g)).clamp(0, 1)
    per = psnr(sr, hr, "benchmark", scale=4, reduction="none")
    assert per.shape == (3,)
    for b in range(3):
        d = ((sr[b] - hr[b]) * torch.tensor([W_R, W_G, W_B]).view(3, 1, 1)).sum(0)[4:-4, 4:-4]
        assert per[b].item() == pytest.approx(-10 * math.log10(d.pow(2).mean().item()), abs=1e-4)
    assert psnr(sr, hr, "benchmark", scale=4).item() == pytest.approx(per.mean().item(), abs=1e-5)
    assert psnr(sr[0], hr[0], "benchmark", scale=4).item() == pytest.approx(per[0].item(), abs=1e-5)


def test_identical_images_give_inf_and_single_channel_is_not_converted():
    x = torch.rand(2, 3, 8, 8)
    assert torch.isinf(psnr(x, x, "benchmark", scale=2, reduction="none")).all()
    sr, hr = torch.full((1, 1, 8, 8), 0.1), torch.zeros(1, 1, 8, 8)
    assert psnr(sr, hr, "benchmark", scale=2).item() == pytest.approx(20.0, abs=1e-4)


def test_psnr_errors():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ImageError):
        psnr(x, torch.rand(1, 3, 8, 9))
    with pytest.raises(ImageError):
        psnr(x, x, "div2k", scale=2)  # a border of 8 leaves nothing of 8x8
    with pytest.raises(ConfigError):
        psnr(x, x, "rgb")
    with pytest.raises(ConfigError):
        psnr(x, x, None, reduction="sum")


# ----------------------------------------------------------------------------- LPIPS
@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download weights fails the test."""
    def boom(*a, **k):
        raise AssertionError("LPIPSMetric tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", boom)


@pytest.fixture
def empty_hub(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def _imgs(seed=0, b=2, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.rand(b, 3, size, size, generator=g)


def test_lpips_random_backbone_basic_properties(no_network, empty_hub):
    m = LPIPSMetric(pnet_rand=True)
    a, b = _imgs()
    d = m(a, b)
    assert d.shape == (2,) and torch.isfinite(d).all() and (d > 0).all()
    assert m(a, a).abs().max().item() < 1e-6
    # deterministic: same seed -> same random trunk -> same distance
    assert torch.equal(LPIPSMetric(pretrained_backbone=False)(a, b), d)
    assert not torch.equal(LPIPSMetric(pnet_rand=True, seed=1)(a, b), d)
    # inputs in [0, 1] are mapped to [-1, 1] before lpips sees them
    assert torch.allclose(m.model(2 * a - 1, 2 * b - 1).flatten(), d)


def test_lpips_missing_backbone_names_file_and_folder(no_network, empty_hub):
    with pytest.raises(CheckpointError) as ei:
        LPIPSMetric()
    msg = str(ei.value)
    assert "alexnet-owt-7be5be79.pth" in msg
    assert os.path.join(str(empty_hub), "checkpoints") in msg
    assert "--lpips-weights" in msg


def _fake_alexnet_trunk(path):
    tv = pytest.importorskip("torchvision.models")
    torch.manual_seed(123)
    sd = tv.alexnet(weights=None).state_dict()
    torch.save(sd, path)
    return sd


def test_lpips_loads_backbone_from_hub_cache(no_network, empty_hub):
    ck = empty_hub / "checkpoints"
    ck.mkdir(parents=True)
    sd = _fake_alexnet_trunk(ck / BACKBONE_FILES["alex"])
    m = LPIPSMetric()
    assert torch.equal(m.model.net.slice1._modules["0"].weight, sd["features.0.weight"])
    assert torch.equal(m.model.net.slice5._modules["10"].bias, sd["features.10.bias"])
    a, b = _imgs(1)
    assert torch.isfinite(m(a, b)).all()


def test_lpips_local_trunk_and_full_state_dict(no_network, empty_hub, tmp_path):
    trunk = tmp_path / "my_alexnet.pth"
    sd = _fake_alexnet_trunk(trunk)
    m = LPIPSMetric(weights_path=str(trunk))
    assert torch.equal(m.model.net.slice2._modules["3"].weight, sd["features.3.weight"])
    a, b = _imgs(2)
    d = m(a, b)
    # a full LPIPS state dict round-trips
    full = tmp_path / "lpips_full.pth"
    torch.save(m.model.state_dict(), full)
    m2 = LPIPSMetric(weights_path=str(full))
    assert torch.equal(m2(a, b), d)


def test_lpips_bad_weights_file(no_network, empty_hub, tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="features"):
        LPIPSMetric(weights_path=str(bad))
    with pytest.raises(CheckpointError, match="not found"):
        LPIPSMetric(weights_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError):
        LPIPSMetric(net="resnet", pnet_rand=True)
