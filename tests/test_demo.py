"""`anysr demo` in a tiny configuration runs end to end and writes its report and plot."""
import json

import pytest

from anysr_plugin.cli import main
from anysr_plugin.demo import DemoConfig, prepare_out_dir, run_demo
from anysr_plugin.errors import ConfigError

pytest.importorskip("skimage")


def test_demo_tiny_end_to_end(tmp_path):
    out = tmp_path / "demo"
    cfg = DemoConfig.quick_config(out=str(out), n_resblocks=1, n_feats=8, hidden_list=(8,), patch=8, batch_size=2,
                                  pretrain_steps=3, finetune_steps=3, scales=(2.0, 3.0, 4.0), eval_size=32,
                                  latency_repeats=1, progress=False)
    res = run_demo(cfg)
    report = (out / "report.md").read_text()
    assert "# AnySR demo report" in report and "### ×3" in report
    for w in ("0.5", "0.7", "0.9"):
        assert f"| anysr | {w} |" in report
    data = json.loads((out / "results.json").read_text())
    rows = [r for r in data["rows"] if r["model"] == "anysr" and r.get("selected")]
    assert [r["width"] for r in rows] == [0.7, 0.9, 1.0]
    assert [h["scale"] for h in res["headline"]] == [2.0, 3.0, 4.0]
    assert "Where AnySR pays off" in report
    for h in res["headline"]:  # the encoder's share of the original's whole-model MACs, from its own rows
        orig = next(r for r in res["rows"] if r["model"] == "original" and r["scale"] == h["scale"])
        assert h["encoder_share"] == pytest.approx(orig["encoder_gflops"] / orig["total_gflops"])
        assert 0 < h["encoder_share"] < 1 and f"encoder {100 * h['encoder_share']:.0f} %" in report
    for r in data["rows"]:
        if r["model"] == "anysr" and not r.get("selected"):
            # sub-networks are cheaper; the full width pays only the small gate
            assert 0 < r["encoder_cost_ratio"] < (1.0 if r["width"] < 1 else 1.01)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (out / "psnr_vs_gflops.png").exists()
    else:
        assert (out / "psnr_vs_gflops.png").stat().st_size > 1000
        assert "psnr_vs_gflops.png" in report
    # a second run into its own folder is allowed
    prepare_out_dir(out)


def test_demo_refuses_foreign_folder(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="--force"):
        prepare_out_dir(tmp_path)
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_demo_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--quick" in text and "report.md" in text
