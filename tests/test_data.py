"""Image folders, LR synthesis (LIIF's crop rule), sample photographs, chunked application."""
import numpy as np
import pytest
import torch
from PIL import Image

from anysr_plugin.data import (
    ImageFolder,
    PairedFolders,
    bicubic_upsample,
    chunked_apply,
    list_images,
    load_image,
    lr_hr_sizes,
    make_lr,
    sample_images,
    save_image,
    skimage_photos,
)
from anysr_plugin.errors import ConfigError, ScaleError
from anysr_plugin.imresize import ImageError, imresize_matlab, resize_pil


def _write(path, h, w, seed):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


# ----------------------------------------------------------------------------- folders
def test_list_and_load_images_sorted_and_filtered(tmp_path):
    a = _write(tmp_path / "b.png", 5, 6, 0)
    _write(tmp_path / "a.bmp", 4, 4, 1)
    _write(tmp_path / "c.jpg", 8, 8, 2)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    names = [p.split("/")[-1] for p in list_images(tmp_path)]
    assert names == ["a.bmp", "b.png", "c.jpg"]
    folder = ImageFolder(tmp_path)
    assert len(folder) == 3
    name, img = folder[1]
    assert name == "b.png" and img.shape == (3, 5, 6) and torch.equal(img, a)
    assert len(ImageFolder(tmp_path, first_k=2)) == 2
    # grey and RGBA files come back as RGB
    Image.fromarray(np.full((3, 3), 7, np.uint8)).save(tmp_path / "g.png")
    assert torch.allclose(load_image(tmp_path / "g.png"), torch.full((3, 3, 3), 7 / 255))


def test_folder_errors(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        list_images(tmp_path / "nope")
    with pytest.raises(ImageError, match="no images"):
        list_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "broken.png")


def test_save_image_round_trip(tmp_path):
    x = torch.rand(3, 7, 9, generator=torch.Generator().manual_seed(0))
    save_image(x, tmp_path / "x.png")
    y = load_image(tmp_path / "x.png")
    assert torch.equal(y, (x * 255).round() / 255)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temp file left


def test_paired_folders_pair_by_order_and_crop(tmp_path):
    (tmp_path / "LR").mkdir()
    (tmp_path / "HR").mkdir()
    for i, (h, w) in enumerate([(13, 14), (12, 9)]):
        _write(tmp_path / "HR" / f"img{i}.png", h, w, 10 + i)
        _write(tmp_path / "LR" / f"img{i}x3.png", h // 3, w // 3, 20 + i)
    pairs = PairedFolders(tmp_path / "LR", tmp_path / "HR")
    assert len(pairs) == 2
    name, lr, hr = pairs[0]
    assert name == "img0.png" and lr.shape == (3, 4, 4) and hr.shape == (3, 12, 12)
    assert torch.equal(hr, load_image(tmp_path / "HR" / "img0.png")[:, :12, :12])
    _, lr, hr = PairedFolders(tmp_path / "LR", tmp_path / "HR", scale=2.5)[1]
    assert lr.shape == (3, 4, 3) and hr.shape == (3, 10, 8)  # round(4*2.5), round(3*2.5)
    _write(tmp_path / "HR" / "extra.png", 4, 4, 0)
    with pytest.raises(ImageError, match="2 LR images"):
        PairedFolders(tmp_path / "LR", tmp_path / "HR")


# ----------------------------------------------------------------------------- LR synthesis
def test_lr_hr_sizes_follow_liif():
    assert lr_hr_sizes((100, 100), 3) == ((33, 33), (99, 99))
    assert lr_hr_sizes((100, 100), 2.5) == ((40, 40), (100, 100))
    # floor(97/1.7)=57, round(57*1.7=96.9)=97; floor(64/3.3)=19, round(62.7)=63
    assert lr_hr_sizes((97, 64), (1.7, 3.3)) == ((57, 19), (97, 63))
    # 110/1.1 is 99.99999999999999 in floating point: the 1e-9 guard keeps 100
    assert lr_hr_sizes((110, 110), 1.1) == ((100, 100), (110, 110))
    # Python's round (half to even), as upstream: 5 * 2.5 = 12.5 -> 12
    assert lr_hr_sizes((13, 13), 2.5)[1] == (12, 12)
    with pytest.raises(ScaleError):
        lr_hr_sizes((10, 10), 0)
    with pytest.raises(ScaleError):
        lr_hr_sizes((10, 10), 20)


def test_make_lr_pil_and_matlab():
    g = torch.Generator().manual_seed(5)
    hr = torch.rand(3, 50, 47, generator=g)
    lr, crop = make_lr(hr, 3, method="pil")
    assert lr.shape == (3, 16, 15) and crop.shape == (3, 48, 45)
    assert torch.equal(crop, hr[:, :48, :45])
    assert torch.equal(lr, resize_pil(hr[:, :48, :45], (16, 15)))
    transforms = pytest.importorskip("torchvision.transforms")
    ref = transforms.ToTensor()(transforms.Resize((16, 15), Image.BICUBIC)(transforms.ToPILImage()(crop)))
    assert torch.equal(lr, ref)
    lr_m, crop_m = make_lr(hr, 3, method="matlab")
    assert torch.equal(crop_m, crop)
    assert torch.equal(lr_m, imresize_matlab(crop, scale=1 / 3))  # integer scale == imresize(hr, 1/s)
    lr_a, crop_a = make_lr(hr.unsqueeze(0), (1.5, 2.2), method="matlab")
    assert lr_a.shape == (1, 3, 33, 21) and crop_a.shape == (1, 3, 50, 46)
    with pytest.raises(ImageError):
        make_lr(hr, 2, method="cv2")


def test_bicubic_upsample_sizes_and_methods():
    lr = torch.rand(3, 8, 6, generator=torch.Generator().manual_seed(6))
    for m in ("pil", "matlab", "torch"):
        out = bicubic_upsample(lr, (20, 15), method=m)
        assert out.shape == (3, 20, 15) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ImageError):
        bicubic_upsample(lr, (20, 15), method="lanczos")


# ----------------------------------------------------------------------------- photos
def test_skimage_photos_are_real_rgb_images():
    pytest.importorskip("skimage")
    photos = skimage_photos(["astronaut", "camera"])
    assert photos["astronaut"].shape == (3, 512, 512)
    cam = photos["camera"]
    assert cam.shape == (3, 512, 512) and torch.equal(cam[0], cam[2])  # grey -> RGB
    for p in photos.values():
        assert p.dtype == torch.float32 and p.min() >= 0 and p.max() <= 1 and p.std() > 0.1
    with pytest.raises(ImageError):
        skimage_photos(["no_such_image"])


def test_sample_images_are_seeded_crops():
    pytest.importorskip("skimage")
    a = sample_images(4, 32, seed=0)
    assert a.shape == (4, 3, 32, 32)
    assert torch.equal(a, sample_images(4, 32, seed=0))
    assert not torch.equal(a, sample_images(4, 32, seed=1))
    assert sample_images(2, (16, 24), seed=3, names=["chelsea"]).shape == (2, 3, 16, 24)
    state = torch.random.get_rng_state()
    sample_images(1, 8, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


# ----------------------------------------------------------------------------- chunking
def test_chunked_apply_equals_one_call():
    g = torch.Generator().manual_seed(7)
    coord = torch.rand(2, 103, 2, generator=g)
    cell = torch.rand(2, 103, 2, generator=g)
    w = torch.rand(4, 3, generator=g)

    def fn(c, s):
        return torch.cat([c, s], -1) @ w

    full = fn(coord, cell)
    for chunk in (1, 10, 103, 1000):
        assert torch.equal(chunked_apply(fn, coord, cell, chunk=chunk), full)
    # SRNO-style rows of a (B, H, W, 2) grid with the (B, 2) cell closed over
    grid = torch.rand(1, 9, 5, 2, generator=g)
    c2 = torch.rand(1, 2, generator=g)
    f2 = lambda q: q.sum(-1, keepdim=True) * c2[:, None, None, :1]  # noqa: E731
    assert torch.equal(chunked_apply(f2, grid, chunk=4, dim=1), f2(grid))
    with pytest.raises(ConfigError):
        chunked_apply(fn, coord, cell, chunk=0)
    with pytest.raises(ImageError):
        chunked_apply(fn, coord, cell[:, :5], chunk=4)
