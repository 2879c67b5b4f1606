"""The opt-in slimmable decoder (AnySRConfig(decoder="slim")): LIIF imnet and SRNO fc1/fc2."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anysr_plugin import anysrify
from anysr_plugin.config import AnySRConfig
from anysr_plugin.control import anysr_blocks, use_scale, use_width
from anysr_plugin.cost import count_flops, safe_deepcopy
from anysr_plugin.decoder import (SlimMLP, SlimPointwise, current_widths, decoder_macs_per_query,
                                  slim_decoders)
from anysr_plugin.errors import ConfigError, UnsupportedBlockError
from anysr_plugin.plan import active_plan
from anysr_plugin.export import export_subnet
from anysr_plugin.reference.models import build_reference, cell_for, make_coord

from conftest import randomize_gates, tiny_edsr

WIDE = (0.6, 0.75, 0.9, 1.0)


def _liif(**kw):
    return build_reference("liif-edsr-baseline", seed=0, n_resblocks=2, n_feats=16, hidden_list=[20, 12], **kw)


def _srno():
    return build_reference("srno-edsr-baseline", seed=0, n_resblocks=1, n_feats=64, width=16, blocks=4)


def _inputs(kind, b=3, lr=6, hr=9):
    g = torch.Generator().manual_seed(1)
    inp = torch.randn(b, 3, lr, lr, generator=g)
    if kind == "srno":
        coord = make_coord((hr, hr), flatten=False).unsqueeze(0).expand(b, hr, hr, 2).contiguous()
        return inp, coord, cell_for((hr, hr), b)
    coord = make_coord((hr, hr)).unsqueeze(0).expand(b, hr * hr, 2).contiguous()
    return inp, coord, cell_for((hr, hr), b, hr * hr)


def _convert(kind, decoder_widths=None, **cfg):
    orig = (_srno() if kind == "srno" else _liif()).eval()
    model = anysrify(safe_deepcopy(orig), AnySRConfig(decoder="slim", decoder_widths=decoder_widths, seed=0, **cfg))
    return orig, model.eval()


def _randomize_decoder_bias(model):  # the default init is fine, but make unused units matter
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for d in slim_decoders(model):
            for p in d.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("kind", ["liif", "srno"])
def test_full_width_is_the_original_bit_for_bit(kind):
    orig, model = _convert(kind)
    args = _inputs(kind)
    with torch.no_grad(), use_width(model, 1.0):
        assert torch.equal(model(*args), orig(*args))
    # the decoder alone, on the original code path
    if kind == "liif":
        x = torch.randn(2, 5, model.imnet.layers[0].in_features)
        with torch.no_grad(), use_width(model, 1.0):
            assert torch.equal(model.imnet(x), orig.imnet(x))


@pytest.mark.parametrize("kind", ["liif", "srno"])
def test_adopts_parameters_and_adds_no_tensor(kind):
    orig = (_srno() if kind == "srno" else _liif()).eval()
    enc_only = anysrify(safe_deepcopy(orig), AnySRConfig(seed=0))
    params = {n: p for n, p in orig.named_parameters()}
    model = anysrify(orig, AnySRConfig(decoder="slim", seed=0))
    assert set(model.state_dict()) == set(enc_only.state_dict())
    for name, p in model.named_parameters():
        if name in params and not name.startswith("encoder"):
            assert p is params[name], name
    kinds = {type(d) for d in slim_decoders(model)}
    assert kinds == ({SlimPointwise} if kind == "srno" else {SlimMLP})


def _mlp_reference(mlp, x, width):
    """Independent sliced MLP: first floor(H*w) hidden units of every hidden layer."""
    lins = [m for m in mlp.layers if isinstance(m, torch.nn.Linear)]
    h, prev = x, None
    for k, lin in enumerate(lins):
        w, b = lin.weight, lin.bias
        if k < len(lins) - 1:
            n = int(lin.out_features * width + 1e-6)
            w, b = w[:n], b[:n]
        if prev is not None:
            w = w[:, :prev]
        h = h @ w.t() + b
        if k < len(lins) - 1:
            h, prev = torch.relu(h), n
    return h


def test_liif_sliced_matches_an_independent_reference():
    _, model = _convert("liif", decoder_widths=WIDE)
    _randomize_decoder_bias(model)
    x = torch.randn(2, 7, model.imnet.layers[0].in_features)
    for w_enc, w_dec in zip((0.5, 0.7, 0.9, 1.0), WIDE):
        with torch.no_grad(), use_width(model, w_enc):
            torch.testing.assert_close(model.imnet(x), _mlp_reference(model.imnet, x, w_dec), rtol=1e-5, atol=1e-6)


def test_srno_sliced_matches_an_independent_reference():
    _, model = _convert("srno")
    _randomize_decoder_bias(model)
    x = torch.randn(2, 16, 3, 4)
    hidden = model.fc1.out_channels  # upstream's fixed 256
    for w in (0.5, 0.7, 1.0):
        n = int(hidden * w + 1e-6)
        ref = F.conv2d(F.gelu(F.conv2d(x, model.fc1.weight[:n], model.fc1.bias[:n])), model.fc2.weight[:, :n],
                       model.fc2.bias)
        with torch.no_grad(), use_width(model, w):
            torch.testing.assert_close(model.fc2(F.gelu(model.fc1(x))), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["liif", "srno"])
def test_masked_equals_sliced_per_sample(kind):
    _, model = _convert(kind, decoder_widths=WIDE)
    randomize_gates(model)
    _randomize_decoder_bias(model)
    inp, coord, cell = _inputs(kind, b=3)
    scales = torch.tensor([[1.5, 1.5], [2.0, 2.0], [4.0, 4.0]])  # widths 0.5 / 0.7 / 1 (decoder 0.6 / 0.75 / 1)
    seen = []
    dec = slim_decoders(model)[0]
    hook = dec.register_forward_pre_hook(lambda m, a: seen.append(current_widths(m, a[0].shape[0])))
    with torch.no_grad(), use_scale(model, scales):
        mixed = model(inp, coord, cell)
    hook.remove()
    assert seen[0] == [0.6, 0.75, 1.0]
    for b in range(3):
        with torch.no_grad(), use_scale(model, scales[b:b + 1]):
            alone = model(inp[b:b + 1], coord[b:b + 1], cell[b:b + 1])
        torch.testing.assert_close(mixed[b:b + 1], alone, rtol=1e-5, atol=1e-5)


def _check_grads(grad, n, dim):
    used = grad.narrow(dim, 0, n)
    unused = grad.narrow(dim, n, grad.shape[dim] - n)
    assert used.abs().sum() > 0 and torch.count_nonzero(unused) == 0


@pytest.mark.parametrize("mixed", [False, True])
def test_liif_gradients_only_on_used_units(mixed):
    _, model = _convert("liif", reset_prob=0.0)
    model.train()
    inp, coord, cell = _inputs("liif", b=2)
    scales = torch.tensor([[1.5, 1.5], [1.5, 1.5]] if not mixed else [[1.5, 1.5], [2.0, 2.0]])
    with use_scale(model, scales):
        model(inp, coord, cell).square().sum().backward()
    # the widest sample decides which units may get a gradient: 0.5 -> 10/6 units, 0.7 -> 14/8 units
    n0, n1 = (10, 6) if not mixed else (14, 8)
    layers = model.imnet.layers
    _check_grads(layers[0].weight.grad, n0, 0)
    _check_grads(layers[0].bias.grad, n0, 0)
    _check_grads(layers[2].weight.grad, n1, 0)
    assert torch.count_nonzero(layers[2].weight.grad[:, n0:]) == 0
    _check_grads(layers[4].weight.grad, n1, 1)


def test_srno_gradients_only_on_used_channels():
    _, model = _convert("srno", reset_prob=0.0)
    model.train()
    inp, coord, cell = _inputs("srno", b=2)
    with use_scale(model, torch.tensor([[1.5, 1.5], [1.6, 1.6]])):
        model(inp, coord, cell).square().sum().backward()
    n = model.fc1.out_channels // 2  # width 0.5 for both samples
    _check_grads(model.fc1.weight.grad, n, 0)
    _check_grads(model.fc1.bias.grad, n, 0)
    _check_grads(model.fc2.weight.grad, n, 1)


def test_training_draw_is_shared_with_the_encoder():
    """Algorithm 1's per-sample draw (with resets) reaches the decoder unchanged."""
    _, model = _convert("liif", decoder_widths=WIDE, reset_prob=0.5)
    model.train()
    inp, coord, cell = _inputs("liif", b=8)
    enc, dec = [], []
    block = anysr_blocks(model)[0]
    h1 = block.register_forward_pre_hook(lambda m, a: enc.append(list(active_plan(m._anysr_state)[1])))
    h2 = model.imnet.register_forward_pre_hook(lambda m, a: dec.append(current_widths(m, a[0].shape[0])))
    with use_scale(model, torch.full((8, 2), 1.5)):
        model(inp, coord, cell)
    h1.remove(), h2.remove()
    assert set(enc[0]) == {0.5, 1.0}  # some samples reset to the full network
    assert dec[0] == [{0.5: 0.6, 1.0: 1.0}[w] for w in enc[0]]
    assert len(dec) == 4  # LIIF's local ensemble: four decoder calls, all with the same widths
    assert all(d == dec[0] for d in dec)


def test_macs_drop_by_the_sliced_decoder():
    _, model = _convert("liif")
    enc_only = anysrify(_liif().eval(), AnySRConfig(seed=0)).eval()
    args = _inputs("liif", b=1, lr=6, hr=12)
    queries = 12 * 12 * 4  # LIIF's local ensemble runs the decoder 4 times per HR pixel
    in_dim = model.imnet.layers[0].in_features
    for w in (0.5, 0.7, 1.0):
        h0, h1 = int(20 * w + 1e-6), int(12 * w + 1e-6)
        per_query = in_dim * h0 + h0 * h1 + h1 * 3
        assert decoder_macs_per_query(model, w) == per_query
        saved = count_flops(enc_only, *args, width=w, scale=2.0) - count_flops(model, *args, width=w, scale=2.0)
        assert saved == queries * (in_dim * 20 + 20 * 12 + 12 * 3 - per_query)
    assert decoder_macs_per_query(enc_only, 0.5) == 0


def test_predict_path_uses_the_scale_groups_decoder_width():
    """gen_feat then query_rgb (batched_predict) under use_scale: equals the exported sub-network."""
    _, model = _convert("liif", decoder_widths=WIDE)
    randomize_gates(model)
    inp, coord, cell = _inputs("liif", b=1)
    with torch.no_grad(), use_scale(model, 2.0):
        model.gen_feat(inp)
        out = model.query_rgb(coord, cell)
    exported = export_subnet(model, 0.7, scale=2.0)
    assert exported.imnet.layers[0].out_features == 15  # floor(20 * 0.75)
    assert not slim_decoders(exported)
    with torch.no_grad():
        torch.testing.assert_close(exported(inp, coord, cell), out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["liif", "srno"])
def test_export_every_width(kind):
    _, model = _convert(kind)
    randomize_gates(model)
    args = _inputs(kind, b=1)
    for w in (0.5, 0.7, 1.0):
        exported = export_subnet(model, w, scale=2.0)
        assert not slim_decoders(exported)
        assert not any(hasattr(m, "_anysr_source") for m in exported.modules())
        with torch.no_grad(), use_width(model, w), use_scale(model, 2.0):
            ref = model(*args)
        with torch.no_grad():
            torch.testing.assert_close(exported(*args), ref, rtol=1e-5, atol=1e-6)


def test_copies_read_their_own_plan():
    _, model = _convert("liif")
    twin = safe_deepcopy(model)
    assert twin.imnet._anysr_source is anysr_blocks(twin)[0]
    assert model.imnet._anysr_source is anysr_blocks(model)[0]
    assert "_anysr_source" not in dict(twin.imnet.named_children())
    twin.imnet.__dict__["_anysr_source"] = anysr_blocks(model)[0]  # stale (as a DataParallel replica's)
    with torch.no_grad():
        twin(*_inputs("liif", b=1))
    assert twin.imnet._anysr_source is anysr_blocks(twin)[0]  # the root hook re-points it


def test_config_round_trip_and_errors():
    cfg = AnySRConfig(decoder="slim", decoder_widths=[0.6, 0.75, 0.9, 1])
    assert cfg.decoder_widths == WIDE and cfg.decoder_width_for(0.7) == 0.75
    assert AnySRConfig.from_dict(cfg.to_dict()) == cfg
    assert AnySRConfig.from_yaml(cfg.to_yaml()) == cfg
    assert AnySRConfig().decoder == "off" and AnySRConfig().decoder_width_for(0.7) == 0.7
    assert AnySRConfig.from_yaml(AnySRConfig().to_yaml()) == AnySRConfig()
    for bad, what in [(dict(decoder="wide"), "decoder"), (dict(decoder_widths=[0.5, 1.0]), "one width per"),
                      (dict(decoder_widths=[0.5, 0.4, 0.9, 1.0]), "ascend"),
                      (dict(decoder_widths=[0.5, 0.7, 0.9, 0.95]), "end with 1.0"),
                      (dict(decoder="slim", compat="official"), "official")]:
        with pytest.raises(ConfigError, match=what):
            AnySRConfig(**bad)


def test_slim_decoder_needs_a_decoder_and_changes_nothing_otherwise():
    enc = tiny_edsr()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(UnsupportedBlockError, match="imnet"):
        anysrify(enc, AnySRConfig(decoder="slim"))
    assert not anysr_blocks(enc) and all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    no_mlp = _liif(imnet=False)
    with pytest.raises(UnsupportedBlockError, match="adapter 'liif' names none on LIIF"):
        anysrify(no_mlp, AnySRConfig(decoder="slim"))
    odd = _liif()
    odd.imnet.layers[1] = torch.nn.Dropout()
    with pytest.raises(UnsupportedBlockError, match="layers.1 is Dropout"):
        anysrify(odd, AnySRConfig(decoder="slim"))
    assert not anysr_blocks(odd)


@pytest.mark.parametrize("kind", ["liif", "srno"])
def test_deferred_gen_feat_path_gives_every_query_chunk_the_scale(kind):
    """Upstream batched_predict run as __main__ (launcher: defer_features): gen_feat first,
    then query_rgb in chunks with the cell -- the decoder runs the scale group's width."""
    from anysr_plugin.adapters.liif import defer_features

    _, model = _convert(kind, decoder_widths=WIDE)
    randomize_gates(model)
    inp, coord, cell = _inputs(kind, b=1, lr=6, hr=12)  # x2: widths 0.7 / 0.75
    with torch.no_grad(), defer_features(model):
        model.gen_feat(inp)
        if kind == "srno":
            out = torch.cat([model.query_rgb(coord[:, r:r + 5], cell) for r in range(0, 12, 5)], dim=2)
        else:
            out = torch.cat([model.query_rgb(coord[:, q:q + 50], cell[:, q:q + 50]) for q in range(0, 144, 50)],
                            dim=1)
    exported = export_subnet(model, 0.7, scale=2.0)
    with torch.no_grad():
        exported.gen_feat(inp)
        if kind == "srno":
            ref = torch.cat([exported.query_rgb(coord[:, r:r + 5], cell) for r in range(0, 12, 5)], dim=2)
        else:
            ref = exported.query_rgb(coord, cell)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["liif", "srno"])
def test_sort_hidden_units_is_a_permutation_most_important_first(kind):
    from anysr_plugin.decoder import _unit_scores, sort_hidden_units

    orig, model = _convert(kind)
    _randomize_decoder_bias(model)
    args = _inputs(kind, b=1)
    with torch.no_grad(), use_width(model, 1.0):
        before = model(*args)
    params = {n: p for n, p in model.named_parameters()}
    old = {n: p.detach().clone() for n, p in params.items()}
    assert sort_hidden_units(model) is model
    assert all(p is params[n] for n, p in model.named_parameters())
    with torch.no_grad(), use_width(model, 1.0):
        torch.testing.assert_close(model(*args), before, rtol=1e-5, atol=1e-5)
    pairs = ([(model.imnet.layers[0], model.imnet.layers[2]), (model.imnet.layers[2], model.imnet.layers[4])]
             if kind == "liif" else [(model.fc1, model.fc2)])
    for a, b in pairs:
        s = _unit_scores(a.weight, a.bias, b.weight)
        assert torch.all(s[:-1] >= s[1:])
    first = "imnet.layers.0.weight" if kind == "liif" else "fc1.weight"
    assert not torch.equal(old[first], params[first])  # really permuted
    assert sorted(old[first].flatten().tolist()) == sorted(params[first].flatten().tolist())
    with pytest.raises(Exception, match="decoder='slim'"):
        sort_hidden_units(anysrify(_liif(), AnySRConfig()))
