"""Conversion time of the ArbRCAN look-alike at ArbRCAN's real size (10 groups x 20 RCAB,
64 features): ``PYTHONPATH=$PWD python3 tests/measure_conversion_time.py [REPEATS] [THREADS]``
from the repository root.  Not a test (no timing assertions in the suite); it prints the
anysrify wall time of each repeat and how many full-width checks ran."""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lookalike_edsr_repo as L  # noqa: E402

import anysr_plugin as anysr  # noqa: E402


def main(repeats: int = 3, threads: int | None = None) -> None:
    if threads:
        torch.set_num_threads(threads)
    root = L.write_arbsr_repo(Path(tempfile.mkdtemp()), images=False)
    path = root / "model/arbrcan.py"
    path.write_text(path.read_text().replace("self.n_resgroups = 2", "self.n_resgroups = 10")
                    .replace("n_resblocks = 2", "n_resblocks = 20").replace("n_feats = 16", "n_feats = 64"))
    times = []
    with L.repo_modules(root, "model.arbrcan") as (mod,):
        for _ in range(repeats):
            torch.manual_seed(0)
            net = mod.make_model(L.meta_args(n_feats=64))
            checks = anysr.inspect_targets(net, adapter="arbsr").validations
            start = time.perf_counter()
            anysr.anysrify(net, adapter="arbsr")
            times.append(time.perf_counter() - start)
    blocks = len(anysr.control.anysr_blocks(net))
    print(f"ArbRCAN look-alike, {blocks} RCAB blocks, {torch.get_num_threads()} thread(s): {checks} full-width "
          f"check(s); anysrify {', '.join(f'{t:.3f}' for t in times)} s (median {statistics.median(times):.3f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, int(sys.argv[2]) if len(sys.argv) > 2 else None)
