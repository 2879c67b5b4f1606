"""Algorithm-1 trainer: sampling statistics, exact resume, DDP keeps ranks identical."""
import socket

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.errors import CheckpointError, ConfigError
from anysr_plugin.reference import build_reference
from anysr_plugin.train import TrainConfig, Trainer, sampling_statistics

WIDTHS = (0.5, 0.7, 0.9, 1.0)


def _images(n=3, size=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return list(torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False))


def _tiny(seed=0, **cfg):
    m = build_reference("liif-edsr-baseline", seed=seed, n_resblocks=1, n_feats=8, hidden_list=[8])
    return anysr.anysrify(m, anysr.AnySRConfig(seed=seed, **cfg))


def _cfg(**kw):
    base = dict(patch=6, batch_size=8, sample_q=16, steps=6, lr=1e-3, progress=False, seed=0, repeat=4)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("p", [0.6, 0.0, 1.0])
def test_algorithm1_sampling_statistics(p):
    model = _tiny(reset_prob=p)
    steps = 40 if p == 0.6 else 4
    t = Trainer(model, _images(), _cfg(batch_size=16, steps=steps), record=True)
    t.run()
    st = sampling_statistics(t.history, WIDTHS)
    n = st["samples"]
    assert n == 16 * steps
    recs = [(g, w, s) for r in t.history for g, w, s in zip(r["groups"], r["widths"], r["scales"])]
    cfg = anysr.AnySRConfig()
    for g, w, s in recs:  # every scale lies in its group's range; width is the group's or the full one
        lo, hi = t.cfg.scale_groups[g]
        assert lo - 0.05 <= s[0] <= hi + 0.05 and s[0] == s[1]
        assert cfg.width_for_scale(s[0]) == WIDTHS[g]
        assert w in (WIDTHS[g], 1.0)
    if p == 0.0:
        assert all(w == WIDTHS[g] for g, w, _ in recs)
    elif p == 1.0:
        assert all(w == 1.0 for _, w, _ in recs)
    else:
        sigma_g = (0.25 * 0.75 / n) ** 0.5
        assert all(abs(f - 0.25) < 4 * sigma_g for f in st["group_freq"]), st
        n_low = sum(1 for g, _, _ in recs if g < 3)
        assert abs(st["reset_rate"] - p) < 4 * (p * (1 - p) / n_low) ** 0.5, st
        # P(full) = 1/T + (T-1)/T * p
        assert abs(st["width_freq"][1.0] - (0.25 + 0.75 * p)) < 4 * (0.7 * 0.3 / n) ** 0.5, st


def test_same_seed_same_run_and_lr_schedule():
    runs = []
    for _ in range(2):
        m = _tiny()
        t = Trainer(m, _images(), _cfg(steps=3), record=True)
        t.run()
        runs.append((t.history, m.state_dict()))
    assert [r["loss"] for r in runs[0][0]] == [r["loss"] for r in runs[1][0]]
    for k in runs[0][1]:
        assert torch.equal(runs[0][1][k], runs[1][1][k]), k
    t = Trainer(_tiny(), _images(), _cfg(steps=None, epochs=5, lr_step_epochs=2, lr=1.0))
    spe = t.steps_per_epoch
    assert t.total_steps == 5 * spe
    assert [t.lr_at(e * spe) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert TrainConfig().lr == 1e-5 and TrainConfig().epochs == 500 and TrainConfig().lr_step_epochs == 200


def test_resume_equals_uninterrupted(tmp_path):
    full = _tiny()
    Trainer(full, _images(), _cfg(steps=6), tmp_path / "a").run()

    class Crash(Exception):
        pass

    def crash_at_5(trainer, rec):
        if trainer.step == 5:
            raise Crash

    part = _tiny()
    t = Trainer(part, _images(), _cfg(steps=6, save_every=2), tmp_path / "b", callback=crash_at_5)
    with pytest.raises(Crash):
        t.run()
    ckpt = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ckpt["step"] == 4  # at most the current interval is lost
    again = _tiny(seed=0)
    t2 = Trainer(again, _images(), _cfg(steps=6, save_every=2), tmp_path / "b")
    assert t2.resume() and t2.step == 4
    t2.run()
    a, b = full.state_dict(), again.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_trainer_errors(tmp_path):
    with pytest.raises(ConfigError):
        TrainConfig(scale_groups=((2.0, 1.0),))
    with pytest.raises(ConfigError, match="scale group"):
        Trainer(_tiny(), _images(), _cfg(scale_groups=((1.1, 1.7), (1.8, 2.5), (2.6, 3.6), (3.7, 4.0))))
    with pytest.raises(ConfigError):
        Trainer(_tiny(), tmp_path / "missing", _cfg())
    (tmp_path / "bad.pt").write_bytes(b"")
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError):
        Trainer(_tiny(), _images(), _cfg()).resume(tmp_path / "bad.pt")


def test_plain_model_trains_and_srno_layout():
    m = build_reference("liif-edsr-baseline", seed=0, n_resblocks=1, n_feats=8, hidden_list=[8])
    before = m.imnet.layers[0].weight.clone()
    t = Trainer(m, _images(), _cfg(steps=2), record=True)
    t.run()
    assert "groups" not in t.history[0] and not torch.equal(before, m.imnet.layers[0].weight)
    s = anysr.anysrify(build_reference("srno-edsr-baseline", seed=0, n_resblocks=1, n_feats=8, width=8, blocks=2),
                       anysr.AnySRConfig(seed=0))
    t = Trainer(s, _images(), _cfg(steps=2, batch_size=2), record=True)
    assert t.layout == "grid"
    inp, coord, cell, gt, scales, groups = t.batch(0)
    assert coord.shape == (2, 6, 6, 2) and cell.shape == (2, 2) and gt.shape == (2, 3, 6, 6)
    assert torch.allclose(scales[:, 0], 2 / (cell[:, 0] * 6))  # the scale the adapter reads from cell
    t.run()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from anysr_plugin.train import init_distributed

    info = init_distributed("cpu")
    try:
        model = _tiny(seed=0)
        if rank == 1:  # a different start on rank 1: DDP must broadcast rank 0's weights
            with torch.no_grad():
                model.encoder.head[0].weight.add_(1.0)
        t = Trainer(model, _images(), _cfg(steps=3), dist_info=info, record=True)
        first = t.batch(0)[0]
        t.run()
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        torch.save({"flat": flat, "first_inp": first, "loss": [r["loss"] for r in t.history]}, f"{out}/rank{rank}.pt")
        dist.barrier()  # no rank tears the group down while another still talks to it
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_keep_parameters_identical(tmp_path):
    import torch.multiprocessing as mp

    init = torch.cat([p.detach().reshape(-1) for p in _tiny(seed=0).parameters()])
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["flat"], r1["flat"])          # identical parameters on every rank
    assert not torch.equal(r0["flat"], init)             # and they did train
    assert not torch.equal(r0["first_inp"], r1["first_inp"])  # each rank saw its own shard of the data
