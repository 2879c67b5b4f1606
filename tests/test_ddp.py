"""A 2-process gloo DistributedDataParallel step on CPU: mixed per-sample widths, no
unused-parameter error, parameters identical across ranks afterwards."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import anysr_plugin as anysr
from anysr_plugin import AnySRConfig


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from conftest import tiny_edsr

        torch.manual_seed(0)  # same initial weights on every rank
        model = anysr.anysrify(tiny_edsr(), AnySRConfig(gate="paper", seed=100 + rank)).train()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(rank)
        for _ in range(3):
            x = torch.randn(4, 3, 8, 8, generator=gen)
            scales = torch.tensor([[1.3, 1.3], [2.2, 2.2], [3.0, 3.0], [3.9, 3.9]])
            with anysr.use_scale(ddp, scales):
                loss = (ddp(x) - x.mean(1, keepdim=True)).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.save({k: v.detach() for k, v in model.state_dict().items()}, os.path.join(out_dir, f"r{rank}.pt"))
        dist.barrier()  # no rank tears the group down while another still talks to it
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_step_keeps_ranks_identical(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "r0.pt"), torch.load(tmp_path / "r1.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    from conftest import tiny_edsr

    torch.manual_seed(0)
    initial = anysr.anysrify(tiny_edsr(), AnySRConfig(gate="paper")).state_dict()
    assert any(not torch.equal(initial[k], a[k]) for k in a if "anysr_gate" in k)  # training happened
