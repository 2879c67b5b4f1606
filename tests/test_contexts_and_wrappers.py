"""Controls held in generators end when the generator does; wrapped, scripted, compiled and
meta-device models are either served as the unconverted model is or refused with a typed error."""
import asyncio
import contextvars
import gc
import threading

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.errors import AnySRWarning

from conftest import ChannelRecorder, tiny_edsr

pytestmark = pytest.mark.filterwarnings("ignore::anysr_plugin.errors.AnySRWarning")

X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def encoder():
    """A bare converted encoder (scale from context): the full network, 16 channels, unless told."""
    return anysr.anysrify(tiny_edsr()).eval()


def channels_now(model) -> int:
    """Channels the first block runs in a plain call made here and now."""
    rec = ChannelRecorder(model)
    with torch.no_grad():
        model(X)
    return rec.calls[-1][0]


def control(model, kind):
    """One of the three user controls, each of which runs the model at 8 channels (width 0.5)."""
    if kind == "width":
        return anysr.use_width(model, 0.5)
    if kind == "scale":
        return anysr.use_scale(model, 1.5)
    return anysr.use_budget(model, gflops=2 * anysr.count_flops(model, X, width=0.5) / 1e9 * 1.01)


CONTROLS = ("width", "scale", "budget")


def held_in_generator(model, kind):
    def outputs():
        with control(model, kind):
            for _ in range(3):
                yield channels_now(model)
    return outputs()


@pytest.mark.parametrize("kind", CONTROLS)
def test_a_generator_left_early_releases_its_control(kind):
    model = encoder()
    for seen in held_in_generator(model, kind):
        assert seen == 8
        break
    assert channels_now(model) == 16


@pytest.mark.parametrize("kind", CONTROLS)
def test_a_generator_closed_in_another_context_releases_its_control(kind):
    """Closed (or collected) elsewhere, its exit runs in another context; the control still ends
    in the context that entered it."""
    model = encoder()
    gen = held_in_generator(model, kind)
    assert next(gen) == 8
    contextvars.copy_context().run(gen.close)
    assert channels_now(model) == 16


@pytest.mark.parametrize("kind", CONTROLS)
def test_a_generator_collected_in_another_thread_releases_its_control(kind):
    model = encoder()
    holder = [held_in_generator(model, kind)]
    assert next(holder[0]) == 8
    t = threading.Thread(target=holder.clear)  # the last reference dies there: the finaliser runs there
    t.start()
    t.join()
    gc.collect()
    assert channels_now(model) == 16


def run_async(model, kind, leave):
    """Width seen in the task after an async generator holding a control was left by `leave`."""

    async def outputs():
        with control(model, kind):
            for _ in range(3):
                yield channels_now(model)

    async def main():
        holder = [outputs()]
        assert await holder[0].__anext__() == 8
        await leave(holder)
        gc.collect()
        await settle()
        return channels_now(model)

    return asyncio.run(main())


async def settle():
    """Let asyncio's async-generator finaliser run: it schedules ``aclose()`` in a new task."""
    for _ in range(4):
        await asyncio.sleep(0)


async def _drop(holder):
    holder.clear()  # left early: the last reference goes


async def _aclose(holder):
    await holder[0].aclose()


@pytest.mark.parametrize("kind", CONTROLS)
@pytest.mark.parametrize("leave", [_drop, _aclose], ids=["left-early", "aclose"])
def test_an_async_generator_releases_its_control_in_the_task(kind, leave):
    model = encoder()
    assert run_async(model, kind, leave) == 16


def test_an_async_for_broken_out_of_releases_the_control_for_the_rest_of_the_task():
    model = encoder()

    async def outputs():
        with anysr.use_width(model, 0.5):
            for _ in range(3):
                yield channels_now(model)

    async def main():
        async for seen in outputs():
            assert seen == 8
            break
        await settle()
        return [channels_now(model) for _ in range(2)]

    assert asyncio.run(main()) == [16, 16]


def test_a_task_started_inside_a_control_sees_it_while_it_is_open():
    """Tasks copy the context: while the `with` is open they see the control; it ends for everyone
    when the `with` exits."""
    model = encoder()

    async def main():
        with anysr.use_width(model, 0.5):
            inside = await asyncio.create_task(_channels(model))
        after = await asyncio.create_task(_channels(model))
        return inside, after

    assert asyncio.run(main()) == (8, 16)


async def _channels(model):
    return channels_now(model)


def test_contexts_still_nest_and_interleave_after_dead_entries():
    model = encoder()
    gen = held_in_generator(model, "width")
    next(gen)
    contextvars.copy_context().run(gen.close)  # a dead entry stays in this context's tuple
    with anysr.use_width(model, 0.7):
        with anysr.use_width(model, 0.9):
            assert channels_now(model) == 14
        assert channels_now(model) == 11
    assert channels_now(model) == 16


# ---------------------------------------------------------------------------
# scripted, traced and compiled models


def _scripted():
    return torch.jit.script(tiny_edsr())


def _traced():
    return torch.jit.trace(tiny_edsr(), X)


def _compiled():
    return torch.compile(tiny_edsr(), backend="eager")


def _compiled_submodule():
    net = tiny_edsr()
    net.body = torch.compile(net.body, backend="eager")
    return net


def _compiled_in_place():
    net = tiny_edsr()
    net.compile(backend="eager")
    return net


def _compiled_data_parallel():
    return torch.nn.DataParallel(torch.compile(tiny_edsr(), backend="eager"))


@pytest.mark.parametrize("build, where, kind", [
    (_scripted, "<model>", "TorchScript"), (_traced, "<model>", "TorchScript"),
    (_compiled, "<model>", "torch.compile"), (_compiled_submodule, "body", "torch.compile"),
    (_compiled_in_place, "<model>", "torch.compile"), (_compiled_data_parallel, "module", "torch.compile")],
    ids=["script", "trace", "compile", "compiled-submodule", "module.compile", "DataParallel(compile)"])
def test_scripted_or_compiled_models_are_refused_with_the_order_to_follow(build, where, kind):
    from anysr_plugin.errors import CompiledModelError

    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for call in (anysr.anysrify, anysr.inspect_targets):
        with pytest.raises(CompiledModelError) as info:
            call(model)
        msg = str(info.value)
        assert f"{where} is " in msg and kind in msg and "call anysrify on the plain model first" in msg
        assert isinstance(info.value, TypeError)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not anysr.is_anysr(model)


def test_compiling_after_conversion_still_works():
    model = encoder()
    compiled = torch.compile(model, backend="eager")
    with anysr.use_width(compiled, 0.5), torch.no_grad():
        out = compiled(X)
    with anysr.use_width(model, 0.5), torch.no_grad():
        torch.testing.assert_close(out, model(X))


# ---------------------------------------------------------------------------
# checkpoints saved through wrappers


def _dp(m):
    return torch.nn.DataParallel(m)


def _compile(m):
    return torch.compile(m, backend="eager")


WRAPPINGS = {
    "compile(DataParallel)": lambda m: _compile(_dp(m)),
    "DataParallel(compile)": lambda m: _dp(_compile(m)),
    "DataParallel(compile(DataParallel))": lambda m: _dp(_compile(_dp(m))),
    "compile(DataParallel(compile))": lambda m: _compile(_dp(_compile(m))),
    "DataParallel(DataParallel)": lambda m: _dp(_dp(m)),
}


@pytest.mark.parametrize("wrap", sorted(WRAPPINGS))
def test_checkpoints_saved_through_any_nesting_of_wrappers_load(wrap, tmp_path):
    trained = tiny_edsr()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    wrapped = WRAPPINGS[wrap](trained)
    sd = wrapped.state_dict()
    assert not any(k.startswith("head.") for k in sd)  # the keys really carry the wrappers' prefixes
    torch.save({"model": {"name": "edsr", "sd": sd}}, tmp_path / "ckpt.pth")
    model = encoder()
    missing, unexpected = anysr.load_upstream_checkpoint(model, tmp_path / "ckpt.pth")
    assert unexpected == [] and all("anysr_gate" in k for k in missing)
    for name, p in trained.named_parameters():
        torch.testing.assert_close(model.get_parameter(name), p, rtol=0, atol=0)


def test_a_compiled_submodule_checkpoint_loads():
    trained = tiny_edsr()
    trained.body = _compile(trained.body)
    sd = trained.state_dict()
    assert any("._orig_mod." in k for k in sd)
    model = encoder()
    missing, unexpected = anysr.load_upstream_checkpoint(model, sd)
    assert unexpected == [] and all("anysr_gate" in k for k in missing)


# ---------------------------------------------------------------------------
# the meta device


def _liif_call(device):
    from anysr_plugin.coords import cell_for, make_coord

    inp = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).to(device)
    coord = make_coord((16, 16)).expand(2, -1, -1).to(device)
    return inp, coord, cell_for((16, 16), batch=2, queries=256).to(device)


def _liif(convert):
    from anysr_plugin.reference import build_reference

    model = build_reference("liif-edsr-baseline", seed=0, n_resblocks=2, n_feats=16)
    return anysr.anysrify(model) if convert else model


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_converted_model_runs_on_meta_as_the_original_does(mode):
    original = _liif(False).to("meta")
    model = _liif(True).to("meta")
    getattr(original, mode)()
    getattr(model, mode)()
    want = original(*_liif_call("meta"))
    rec = ChannelRecorder(model)
    with pytest.warns(AnySRWarning, match="meta device carries no values to read its scale from"):
        out = model(*_liif_call("meta"))
    assert out.is_meta and out.shape == want.shape == (2, 256, 3)
    assert rec.calls == [[16], [16]]  # the scale is unknown: the full network, as documented
    with anysr.use_width(model, 0.5):
        assert model(*_liif_call("meta")).shape == want.shape
    with anysr.use_scale(model, 2.0):
        assert model(*_liif_call("meta")).shape == want.shape
    assert rec.calls[2:] == [[8], [8], [11], [11]]


def test_a_model_converted_on_meta_then_materialised_runs():
    model = _liif(True)
    meta = _liif(False).to("meta")
    anysr.anysrify(meta)  # conversion itself runs on meta (no values to validate)
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    meta.to_empty(device="cpu").load_state_dict(model.state_dict())
    meta.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(meta(*_liif_call("cpu")), model(*_liif_call("cpu")))


def test_a_scale_given_as_a_number_is_read_on_meta():
    """Only values held in meta tensors are unknown: a float scale argument still gives its width."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = tiny_edsr()

        def forward(self, x, scale):
            return self.enc(x)

    model = anysr.anysrify(Net()).eval().to("meta")
    rec = ChannelRecorder(model)
    model(torch.empty(1, 3, 8, 8, device="meta"), 2.0)
    assert rec.calls == [[11], [11]]


# ---------------------------------------------------------------------------
# tracing


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("encoder_kind, control_kind, grad", [
    ("edsr", "scale", False), ("edsr", "width", True), ("edsr", "mixed", False), ("edsr-res-scale", "mixed", True),
    ("edsr-shared-act", "scale", True), ("rdn", "scale", False), ("rdn", "mixed", True), ("rcan", "mixed", True)])
def test_a_fresh_encoder_traces_on_its_first_call(encoder_kind, control_kind, grad):
    """torch.jit.trace traces twice and compares (under no_grad): lazily made index tensors and
    grad-dependent code paths made the graphs differ on a fresh model."""
    from conftest import ENCODERS, randomize_gates

    model = anysr.anysrify(ENCODERS[encoder_kind](), anysr.AnySRConfig(gate="paper")).eval()
    randomize_gates(model)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ctl = {"scale": lambda: anysr.use_scale(model, 2.0), "width": lambda: anysr.use_width(model, 0.5),
           "mixed": lambda: anysr.use_scale(model, torch.tensor([[1.5, 1.5], [3.0, 3.0], [4.0, 4.0]]))}[control_kind]
    with ctl(), torch.set_grad_enabled(grad):
        traced = torch.jit.trace(model, x)
        with torch.no_grad():
            want = model(x)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), want)


# ---------------------------------------------------------------------------
# broken export files


@pytest.fixture(scope="module")
def export_file(tmp_path_factory):
    from anysr_plugin.cli import main

    path = tmp_path_factory.mktemp("export") / "sub.safetensors"
    assert main(["export", "--model", "liif-edsr-baseline", "--model-arg", "n_resblocks=1", "--model-arg",
                 "n_feats=8", "--model-arg", "hidden_list=[8]", "--part", "encoder", "--width", "0.5",
                 "-o", str(path)]) == 0
    return path


def _with_metadata(src, dst, text):
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(src)), str(dst), metadata={"anysr_export": text})
    return dst


def _broken(kind, src, dst):
    import json

    from anysr_plugin.upstream import read_export_metadata

    raw = src.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    meta = read_export_metadata(src)
    if kind == "header-length":
        dst.write_bytes((10**12).to_bytes(8, "little") + raw[8:])
    elif kind == "header-not-json":
        dst.write_bytes(raw[:8] + b"{" * n + raw[8 + n:])
    elif kind == "truncated":
        dst.write_bytes(raw[:-16])
    elif kind == "metadata-not-json":
        _with_metadata(src, dst, "{not json")
    elif kind == "metadata-a-list":
        _with_metadata(src, dst, "[1, 2]")
    elif kind == "metadata-lacks-width":
        _with_metadata(src, dst, json.dumps({k: v for k, v in meta.items() if k != "width"}))
    elif kind == "metadata-model-a-string":
        _with_metadata(src, dst, json.dumps({**meta, "model": "liif"}))
    elif kind == "metadata-bad-scale":
        _with_metadata(src, dst, json.dumps({**meta, "scale": [2, "x"]}))
    elif kind == "metadata-bad-part":
        _with_metadata(src, dst, json.dumps({**meta, "part": "decoder"}))
    return dst


BROKEN = {"header-length": "cannot read export", "header-not-json": "cannot read export",
          "truncated": "cannot read export", "metadata-not-json": "metadata is not JSON",
          "metadata-a-list": "metadata is a JSON list, not an object", "metadata-lacks-width": "metadata lacks width",
          "metadata-model-a-string": "`model` names no model", "metadata-bad-scale": "`scale` is [2, 'x']",
          "metadata-bad-part": "`part` is 'decoder'"}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_export_file_is_a_typed_error_naming_it(kind, export_file, tmp_path):
    from anysr_plugin.errors import CheckpointError
    from anysr_plugin.upstream import load_export

    assert load_export(export_file) is not None  # the intact file loads
    broken = _broken(kind, export_file, tmp_path / f"{kind}.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_export(broken)
    msg = str(info.value)
    assert str(broken) in msg and BROKEN[kind] in msg and "\n" not in msg
