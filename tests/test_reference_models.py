"""The reference look-alikes mirror the documented upstream LIIF / SRNO names, keys and signatures."""
import inspect

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.errors import AnySRError, ConfigError
from anysr_plugin.reference import LIIF, SRNO, build_reference, cell_for, make, make_coord, to_pixel_samples


def test_make_coord_centres_and_layout():
    c = make_coord((2, 4), flatten=False)
    assert c.shape == (2, 4, 2)
    assert torch.allclose(c[:, 0, 0], torch.tensor([-0.5, 0.5]))          # rows on axis 0
    assert torch.allclose(c[0, :, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert make_coord((3, 5)).shape == (15, 2)
    r = make_coord((2,), ranges=[(0, 1)])
    assert torch.allclose(r[:, 0], torch.tensor([0.25, 0.75]))
    with pytest.raises(ConfigError):
        make_coord((0, 3))


def test_to_pixel_samples_row_major():
    img = torch.arange(2 * 3 * 3, dtype=torch.float32).view(2, 3, 3)
    coord, rgb = to_pixel_samples(img)
    assert coord.shape == (9, 2) and rgb.shape == (9, 2)
    assert torch.equal(rgb[1], img[:, 0, 1])
    assert torch.allclose(coord[1], torch.tensor([-2 / 3, 0.0]))


def test_liif_edsr_baseline_keys_and_shapes():
    m = build_reference("liif-edsr-baseline", seed=0)
    sd = m.state_dict()
    assert len(sd) == 82  # 72 encoder keys + imnet.layers.{0,2,4,6,8}.{weight,bias}
    assert sd["imnet.layers.0.weight"].shape == (256, 580)
    assert sd["encoder.body.0.body.0.weight"].shape == (64, 64, 3, 3)
    assert sd["encoder.body.16.weight"].shape == (64, 64, 3, 3)
    assert {k for k in sd if k.startswith("imnet")} == {f"imnet.layers.{i}.{p}" for i in (0, 2, 4, 6, 8)
                                                         for p in ("weight", "bias")}
    params = list(inspect.signature(LIIF).parameters)
    assert params[:5] == ["encoder_spec", "imnet_spec", "local_ensemble", "feat_unfold", "cell_decode"]
    assert list(inspect.signature(m.query_rgb).parameters) == ["coord", "cell"]
    assert list(inspect.signature(m.forward).parameters) == ["inp", "coord", "cell"]


def test_liif_call_shapes_and_variants():
    x = torch.rand(2, 3, 7, 9)
    coord = make_coord((14, 18)).expand(2, -1, -1)
    cell = cell_for((14, 18), 2, 14 * 18)
    for kw in ({}, {"local_ensemble": False}, {"feat_unfold": False}, {"cell_decode": False}):
        m = build_reference("liif-edsr-baseline", seed=0, n_resblocks=2, n_feats=16, hidden_list=[32], **kw)
        out = m(x, coord, cell)
        assert out.shape == (2, 14 * 18, 3)
        m.gen_feat(x)
        assert torch.allclose(m.query_rgb(coord[:, :50], cell[:, :50]), out[:, :50], atol=1e-6)
    m = build_reference("liif-edsr-baseline", seed=0, n_resblocks=2, n_feats=16, hidden_list=[32],
                        cell_decode=False)
    assert m.imnet.layers[0].in_features == 16 * 9 + 2
    nearest = build_reference("liif-edsr-baseline", n_resblocks=1, n_feats=8, imnet=False)
    assert nearest.imnet is None and nearest(x, coord, cell).shape == (2, 14 * 18, 8)


def test_liif_seed_is_reproducible_and_local():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_reference("liif-rdn", seed=5, D=2, C=2, G=8, hidden_list=[16])
    after = torch.rand(1)
    b = build_reference("liif-rdn", seed=5, D=2, C=2, G=8, hidden_list=[16])
    assert torch.equal(before, after)  # the global RNG is untouched
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert "encoder.RDBs.1.convs.1.conv.0.weight" in a.state_dict()


def test_srno_keys_shapes_and_call():
    m = build_reference("srno-edsr-baseline", seed=0)
    sd = m.state_dict()
    assert len(sd) == 98
    expect = {"conv00.weight": (256, 266, 1, 1), "conv0.qkv_proj.weight": (768, 256, 1, 1),
              "conv1.o_proj1.weight": (256, 256, 1, 1), "conv1.o_proj2.weight": (256, 256, 1, 1),
              "conv0.kln.weight": (16, 1, 16), "conv0.vln.bias": (16, 1, 16), "fc1.weight": (256, 256, 1, 1),
              "fc2.weight": (3, 256, 1, 1)}
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert len(build_reference("srno-rdn", seed=0).state_dict()) == 322
    small = build_reference("srno-edsr-baseline", seed=0, n_resblocks=2, n_feats=16, width=32, blocks=4)
    x = torch.rand(2, 3, 6, 8)
    coord = make_coord((12, 16), flatten=False).expand(2, -1, -1, -1)
    out = small(x, coord, cell_for((12, 16), 2))
    assert out.shape == (2, 3, 12, 16)
    assert small.conv00.in_channels == (16 + 2) * 4 + 2
    assert list(inspect.signature(SRNO).parameters)[:3] == ["encoder_spec", "width", "blocks"]


def test_registry_errors_are_typed():
    with pytest.raises(ConfigError):
        build_reference("liif-vgg")
    with pytest.raises(ConfigError):
        build_reference("srno-rcan")
    with pytest.raises(ConfigError, match="unknown argument"):
        build_reference("liif-edsr-baseline", n_resblock=3)
    with pytest.raises(AnySRError):
        make({"args": {}})
    with pytest.raises(ConfigError):
        LIIF()


@pytest.mark.parametrize("name,kw", [("liif-edsr-baseline", dict(n_resblocks=2, n_feats=16, hidden_list=[16])),
                                     ("liif-rdn", dict(D=2, C=2, G=16, G0=16, hidden_list=[16])),
                                     ("srno-edsr-baseline", dict(n_resblocks=2, n_feats=16, width=16, blocks=2))])
def test_anysrify_keeps_function_and_names(name, kw):
    m = build_reference(name, seed=0, **kw).eval()
    x = torch.rand(1, 3, 8, 8)
    if name.startswith("srno"):
        coord, cell = make_coord((16, 16), flatten=False).unsqueeze(0), cell_for((16, 16), 1)
    else:
        coord, cell = make_coord((16, 16)).unsqueeze(0), cell_for((16, 16), 1, 256)
    with torch.no_grad():
        ref = m(x, coord, cell)
    keys = set(m.state_dict())
    m = anysr.anysrify(m, anysr.AnySRConfig(seed=0))
    new = set(m.state_dict())
    assert keys <= new and all("anysr_" in k for k in new - keys)
    with torch.no_grad(), anysr.use_scale(m, 2.0), anysr.use_width(m, 1.0):
        out = m(x, coord, cell)
    assert (out - ref).abs().max() <= 1e-5
