"""bench: interleaved latency + memory report is well formed (no timing assertions); CLI commands run."""
from __future__ import annotations

import json

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.bench import bench_widths, format_markdown, peak_memory
from anysr_plugin.cli import main

from conftest import tiny_edsr


def test_bench_widths_report_is_well_formed():
    torch.manual_seed(0)
    original = tiny_edsr().eval()
    model = anysr.anysrify(tiny_edsr()).eval()
    model.load_state_dict(original.state_dict(), strict=False)
    x = torch.rand(1, 3, 8, 8)
    rep = bench_widths(model, (x,), scales=(2.0, (1.5, 3.0)), original=original, warmup=1, repeats=3)
    json.loads(json.dumps(rep))  # serialisable
    assert rep["repeats"] == 3 and rep["clock"] == "wall" and rep["threads"] >= 1
    res = rep["results"]
    assert len(res) == 2 * (1 + 4)
    for r in res:
        assert set(r) >= {"model", "width", "scale", "input_shape", "median_ms", "p25_ms", "p75_ms", "ratio",
                          "peak_mem_bytes", "mem_ratio", "runs"}
        assert r["runs"] == 3 and r["median_ms"] > 0 and r["p25_ms"] <= r["median_ms"] <= r["p75_ms"]
        assert r["input_shape"] == [1, 3, 8, 8] and r["peak_mem_bytes"] > 0
    originals = [r for r in res if r["model"] == "original"]
    assert [o["ratio"] for o in originals] == [1.0, 1.0]
    assert [r["width"] for r in res if r["model"] == "anysr"] == [0.5, 0.7, 0.9, 1.0] * 2
    assert res[5]["scale"] == [1.5, 3.0]
    md = format_markdown(rep)
    assert md.count("| anysr |") == 8 and "| original |" in md


def test_cpu_clock_and_no_memory():
    model = anysr.anysrify(tiny_edsr()).eval()
    rep = bench_widths(model, (torch.rand(1, 3, 6, 6),), widths=(0.5, 1.0), warmup=0, repeats=1, memory=False,
                       clock="cpu")
    assert rep["clock"] == "cpu" and len(rep["results"]) == 2
    assert rep["results"][1]["ratio"] == 1.0 and rep["results"][0]["peak_mem_bytes"] is None


def test_peak_memory_counts_live_tensors():
    def f():
        a = torch.ones(1000)       # 4000 bytes
        b = a * 2                  # +4000 while a lives
        return b.sum()
    assert peak_memory(f, torch.device("cpu")) >= 8000


def test_cli_bench_flops_export(tmp_path, capsys):
    args = ["--model-arg", "n_resblocks=1", "--model-arg", "n_feats=16"]
    assert main(["bench", *args, "--lr-size", "8x8", "--warmup", "0", "--repeats", "1", "--widths", "0.5,1.0",
                 "--json", str(tmp_path / "b.json")]) == 0
    rep = json.loads((tmp_path / "b.json").read_text())
    assert len(rep["results"]) == 3 and rep["model"] == "edsr-baseline"
    # the bench JSON feeds use_budget(latency_table=...)
    model = anysr.anysrify(tiny_edsr(n_resblocks=1)).eval()
    fast = min(r["median_ms"] for r in rep["results"] if r["model"] == "anysr")
    with anysr.use_budget(model, latency_table=str(tmp_path / "b.json"), latency_ms=fast * 1.0001) as b, \
            anysr.use_scale(model, 4.0), torch.no_grad():
        model(torch.rand(1, 3, 8, 8))
    assert b.decisions
    capsys.readouterr()
    assert main(["flops", *args, "--lr-size", "4x4", "--format", "json", "--widths", "all"]) == 0
    assert json.loads(capsys.readouterr().out)["blocks"][0]["conv_params"] == 2 * (16 * 16 * 9 + 16)
    assert main(["flops", *args, "--lr-size", "4x4", "--json", str(tmp_path / "f.json"), "--widths", "all"]) == 0
    data = json.loads((tmp_path / "f.json").read_text())
    assert [r["width"] for r in data["rows"] if r["model"] == "anysr"] == [0.5, 0.7, 0.9, 1.0] * 3
    assert [r["scale"] for r in data["rows"] if r["model"] == "original"] == [[2, 2], [3, 3], [4, 4]]
    out = tmp_path / "sub.pt"
    assert main(["export", *args, "--width", "0.7", "--scale", "2", "--lr-size", "8x8", "-o", str(out)]) == 0
    loaded = torch.jit.load(str(out))
    assert loaded(torch.rand(1, 3, 5, 5)).shape == (1, 16, 5, 5)
    assert main(["export", *args, "--width", "0.5", "-o", str(tmp_path / "sub.safetensors")]) == 0
    assert main(["export", *args, "--width", "0.6", "-o", str(tmp_path / "x.pt")]) == 2  # not a width: error


def test_help_answers(capsys):
    for cmd in ("flops", "bench", "eval", "export"):
        try:
            main([cmd, "--help"])
        except SystemExit as e:
            assert e.code == 0
        assert "usage: anysr " + cmd in capsys.readouterr().out


def test_finetune_step_report_counts_what_each_path_runs():
    import copy

    from anysr_plugin.bench import finetune_step_report, format_finetune_markdown
    from anysr_plugin.reference import build_reference

    original = build_reference("liif-edsr-baseline", seed=0, n_resblocks=2, n_feats=8, hidden_list=[8])
    variants = {"grouped": anysr.anysrify(copy.deepcopy(original), anysr.AnySRConfig(seed=1)),
                "masked": anysr.anysrify(copy.deepcopy(original), anysr.AnySRConfig(seed=1, mixed_path="masked"))}
    rep = finetune_step_report(original, variants, batch=4, patch=6, sample_q=8, warmup=0, repeats=1,
                               memory_steps=2)
    json.loads(json.dumps(rep))
    rows = {r["name"]: r for r in rep["results"]}
    assert list(rows) == ["vanilla", "grouped", "masked"]
    assert rows["vanilla"]["time_ratio"] == 1.0 and rows["vanilla"]["mem_ratio"] == 1.0
    assert all(r["peak_mem_bytes"] > 0 and r["median_ms"] > 0 for r in rows.values())
    g = rows["grouped"]
    per = {float(w): v for w, v in g["per_sample_encoder_macs"].items()}
    assert per[0.5] < per[0.7] < per[0.9] < per[1.0]
    # the grouped path costs the sum of its samples' sliced costs (what it ran, step by step) ...
    want = [sum(per[w] for w in ws) for ws in g["widths_memory_steps"]]
    assert g["encoder_macs_counted"] == pytest.approx(sum(want) / len(want), rel=1e-12)
    # ... the masked path the full width for every sample, whatever the mix
    assert rows["masked"]["encoder_macs_counted"] == 4 * per[1.0]
    assert g["encoder_mac_ratio_expected"] < 1.0 < rows["masked"]["encoder_mac_ratio_counted"]
    assert "| grouped | sample | auto |" in format_finetune_markdown(rep)


def test_cli_bench_finetune_step(tmp_path, capsys):
    args = ["bench", "--model", "liif-edsr-baseline", "--model-arg", "n_resblocks=1", "--model-arg", "n_feats=8",
            "--model-arg", "hidden_list=[8]", "--lr-size", "6x6", "--warmup", "0", "--repeats", "1",
            "--widths", "0.5,1.0", "--device", "cpu", "--finetune-step", "--step-batch", "2", "--step-patch", "6",
            "--step-sample-q", "8", "--step-warmup", "0", "--step-repeats", "1", "--step-memory-steps", "1"]
    assert main(args + ["--json", str(tmp_path / "b.json")]) == 0
    rep = json.loads((tmp_path / "b.json").read_text())
    assert len(rep["results"]) == 3
    assert [r["name"] for r in rep["finetune_step"]["results"]] == ["vanilla", "anysr", "anysr (masked)",
                                                                     "anysr (reset=batch)"]
    assert "encoder ratio (expected)" in capsys.readouterr().out
    assert main(["bench", "--finetune-step", "--lr-size", "6x6"]) == 2  # a bare encoder: no training step
    assert "anysr bench: error: --finetune-step" in capsys.readouterr().err
