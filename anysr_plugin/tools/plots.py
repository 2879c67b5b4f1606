"""PSNR-vs-GFLOPs plots (matplotlib is an optional extra: ``pip install 'anysr_plugin[plot]'``)."""
from __future__ import annotations

from typing import Sequence

from ..runtime.errors import AnySRError
from ..runtime.files import write_atomic

__all__ = ["plot_psnr_vs_gflops", "save_figure", "PlotError"]


class PlotError(AnySRError, ImportError):
    """matplotlib is missing."""


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("plots need matplotlib, an optional extra: pip install 'anysr_plugin[plot]' "
                        "(or pip install matplotlib); the JSON and markdown results are written without it") from None
    return plt


def plot_psnr_vs_gflops(results: Sequence, path, title: str = "PSNR vs GFLOPs") -> str:
    """One line per scale through the evaluated widths (EvalResult rows or their dicts);
    rows without GFLOPs (the bicubic baseline) are drawn as horizontal dashed lines."""
    plt = _pyplot()
    rows = [r if isinstance(r, dict) else vars(r) for r in results]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    by_scale: dict = {}
    for r in rows:
        key = str(r["scale"])
        by_scale.setdefault(key, []).append(r)
    for i, (scale, rs) in enumerate(by_scale.items()):
        color = f"C{i % 10}"
        pts = sorted((r["gflops"], r["psnr"], r.get("width")) for r in rs if r.get("gflops") is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=f"x{scale}")
            for g, p, w in pts:
                if w is not None:
                    ax.annotate(f"{w:g}", (g, p), textcoords="offset points", xytext=(3, 3), fontsize=7)
        for r in rs:
            if r.get("gflops") is None:
                ax.axhline(r["psnr"], color=color, ls="--", lw=0.8)
    ax.set_xlabel("GFLOPs (2 x MACs)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return str(path)


def save_figure(fig, path, dpi: int) -> None:
    """Save and close a figure atomically (``files.write_atomic``), in the format of the suffix."""
    import os


    fmt = os.path.splitext(str(path))[1].lstrip(".").lower() or "png"
    try:
        write_atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))
    finally:
        _pyplot().close(fig)
