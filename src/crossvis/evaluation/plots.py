"""PNG plots of an analysis (matplotlib, Agg backend): ΔAP per error type, AP by bin, AP per category."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402 (after the backend)

from crossvis.evaluation.analysis import ERROR_TYPES  # noqa: E402
from crossvis.files import atomic_path  # noqa: E402

PLOTS = ("errors.png", "by_length.png", "by_occlusion.png", "per_category.png")


def _bars(path: Path, labels: Sequence[str], values: Sequence[float], title: str, ylabel: str) -> Path:
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) + 2), 3.2), dpi=100)
    shown = [max(v, 0.0) for v in values]
    ax.bar(range(len(labels)), shown, color="#4878cf")
    for i, v in enumerate(values):
        ax.text(i, max(v, 0.0), "-" if v < 0 else f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(
        range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center"
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, max([*shown, 1.0]) * 1.15)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path


def _binned(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[float]]:
    return [r["name"] for r in rows], [100 * r["AP"] if r["AP"] >= 0 else -1.0 for r in rows]


def write_plots(analysis: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """The four plots into ``out_dir``; a bin without ground truth is drawn empty and labelled '-'."""
    out_dir = Path(out_dir)
    e = analysis["errors"]
    paths = [
        _bars(
            out_dir / PLOTS[0],
            [*ERROR_TYPES, "all"],
            [100 * e["dAP"][t] for t in ERROR_TYPES] + [100 * e["dAP_all"]],
            f"AP gained by an oracle fixing each error type (AP {100 * e['AP']:.1f})",
            "ΔAP (points)",
        )
    ]
    length, dur = _binned(analysis["by_video_length"]["bins"]), _binned(analysis["by_duration"]["bins"])
    labels = [f"video {n}" for n in length[0]] + [f"instance {n}" for n in dur[0]]
    paths.append(
        _bars(out_dir / PLOTS[1], labels, length[1] + dur[1], "AP by video length and instance duration", "AP")
    )
    paths.append(_bars(out_dir / PLOTS[2], *_binned(analysis["by_occlusion"]["bins"]), "AP by occlusion level", "AP"))
    cats = analysis["per_category"]
    paths.append(
        _bars(out_dir / PLOTS[3], [c["name"] for c in cats], [100 * c["AP"] for c in cats], "AP per category", "AP")
    )
    return paths
