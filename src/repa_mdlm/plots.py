"""The paper's Figures 2-5 from the aggregated runs and the training logs.

fig2_training_curves: validation ELBO perplexity vs step, baseline vs best REPA cell.
fig3_teacher / fig4_layer / fig5_weight: mean test perplexity by teacher / layer / weight,
averaged over the other axes and seeds, with the baseline as a dashed reference.

Sized for one paper column; every figure is written as PNG (200 dpi) and PDF.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .aggregate import atomic_write  # noqa: E402
from .config import BASELINE  # noqa: E402

FIGSIZE = (3.5, 2.6)
PPL_LABEL = "ELBO perplexity (lower is better)"
STYLE = {
    "font.size": 7.5, "axes.titlesize": 7.5, "axes.labelsize": 7.5, "legend.fontsize": 6.5,
    "xtick.labelsize": 6.5, "ytick.labelsize": 6.5, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "axes.grid.axis": "y", "grid.alpha": 0.3, "lines.linewidth": 1.2,
    "savefig.bbox": "tight", "savefig.pad_inches": 0.02, "pdf.fonttype": 42,
}
C_BASE, C_REPA, C_BAR = "0.35", "tab:blue", "tab:blue"


# --------------------------------------------------------------------------- data

def read_val_curve(path: str | os.PathLike) -> pd.DataFrame:
    """(step, val_ppl) from a train_log.jsonl; the last row wins for repeated steps
    (a run resumed from a checkpoint logs them again). Unparseable lines are skipped."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        warnings.warn(f"{path}: cannot read training log ({e})")
        lines = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{i}: not JSON, skipped")  # e.g. a line cut by a crash
            continue
        ppl = r.get("val_ppl")
        if ppl is None and r.get("val_nelbo") is not None:
            ppl = math.exp(r["val_nelbo"])
        if ppl is not None and "step" in r:
            rows.append((int(r["step"]), float(ppl)))
    df = pd.DataFrame(rows, columns=["step", "val_ppl"])
    return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def _cell_label(r) -> str:
    return f"best REPA ({r['teacher']}, layer {r['layer']}, λ={r['weight']:.2f})"


def _pick_cells(runs: pd.DataFrame):
    """Baseline seed 0 (else the first baseline) and the REPA cell with the lowest test PPL."""
    base = runs[runs["teacher"] == BASELINE]
    if not base.empty:
        s0 = base[base["seed"] == 0]
        base = (s0 if not s0.empty else base).iloc[0]
    else:
        base = None
    repa = runs[runs["teacher"] != BASELINE].dropna(subset=["test_ppl"])
    best = repa.loc[repa["test_ppl"].idxmin()] if not repa.empty else None
    return base, best


def _baseline_ppl(runs: pd.DataFrame) -> float | None:
    b = runs.loc[runs["teacher"] == BASELINE, "test_ppl"].dropna()
    return float(b.mean()) if not b.empty else None


def group_means(runs: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean test PPL per value of ``by`` over the REPA cells; sem is NaN for single cells."""
    repa = runs[runs["teacher"] != BASELINE].dropna(subset=["test_ppl"])
    g = repa.groupby(by, sort=True)["test_ppl"]
    out = pd.DataFrame({"mean": g.mean(), "n": g.size(), "sem": g.std(ddof=1) / np.sqrt(g.size())})
    out.loc[out["n"] <= 1, "sem"] = np.nan
    return out


# ------------------------------------------------------------------------ drawing

def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = [atomic_write(out_dir / f"{stem}.png", lambda p: fig.savefig(p, format="png", dpi=200)),
             atomic_write(out_dir / f"{stem}.pdf",
                          lambda p: fig.savefig(p, format="pdf", metadata={"CreationDate": None}))]
    plt.close(fig)
    return paths


def _log_if_wide(ax, values) -> None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and x > 0])
    if v.size and v.max() / v.min() > 10:
        ax.set_yscale("log")


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.4")


def fig_training_curves(runs: pd.DataFrame, train_logs: dict[str, str]):
    base, best = _pick_cells(runs)
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    curves = {}
    for row, label, color in ((base, "baseline (no REPA)", C_BASE), (best, None, C_REPA)):
        if row is None:
            continue
        path = train_logs.get(row["cell"])
        curve = read_val_curve(path) if path else pd.DataFrame(columns=["step", "val_ppl"])
        if curve.empty:
            continue
        curves[row["cell"]] = curve
        ax.plot(curve["step"], curve["val_ppl"], color=color, marker="o", ms=1.5,
                label=label or _cell_label(row))
    if not curves:
        _note(ax, "no validation rows in the training logs")
    _log_if_wide(ax, [v for c in curves.values() for v in c["val_ppl"]])

    # Where the REPA run first matches the baseline's final quality (Section 5.1).
    if base is not None and best is not None and base["cell"] in curves and best["cell"] in curves:
        final = curves[base["cell"]]["val_ppl"].iloc[-1]
        ax.axhline(final, color=C_BASE, ls=":", lw=0.8)
        c = curves[best["cell"]]
        hit = c[c["val_ppl"] <= final]
        if not hit.empty:
            step = int(hit["step"].iloc[0])
            ax.axvline(step, color=C_REPA, ls="--", lw=0.8)
            # Text mid-height beside the line, on whichever side has room.
            lo, hi = ax.get_xlim()
            right = (step - lo) / (hi - lo) < 0.6
            ax.annotate(f"REPA reaches the baseline's\nfinal PPL at step {step:,}", xy=(step, 0.55),
                        xycoords=ax.get_xaxis_transform(), xytext=(4 if right else -4, 0),
                        textcoords="offset points", fontsize=6.5, color=C_REPA,
                        ha="left" if right else "right", va="center")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation " + PPL_LABEL.replace("ELBO ", "ELBO\n", 1))
    if curves:
        ax.legend(frameon=False, loc="lower left", bbox_to_anchor=(0.0, 1.0), borderaxespad=0.1)
    return fig


def fig_by(runs: pd.DataFrame, by: str, xlabel: str):
    means = group_means(runs, by)
    if by == "teacher":
        means = means.sort_values("mean")  # ranked: the best teacher first
    labels = [f"{v:.2f}" if by == "weight" else str(v) for v in means.index]
    b = _baseline_ppl(runs)
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    x = np.arange(len(means))
    if len(means):
        sem = means["sem"].to_numpy(dtype=float)
        bars = ax.bar(x, means["mean"], width=0.65, color=C_BAR, alpha=0.85,
                      yerr=np.where(np.isnan(sem), 0.0, sem) if np.isfinite(sem).any() else None,
                      error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.2"})
        # Values inside the bars: differences of a few PPL are hard to read off the axis.
        ax.bar_label(bars, fmt="%.1f", label_type="center", color="white", fontsize=6)
        ax.set_xticks(x, labels)
        if by == "teacher":
            ax.tick_params(axis="x", labelrotation=30)
            for t in ax.get_xticklabels():
                t.set_ha("right")
                t.set_rotation_mode("anchor")
    else:
        ax.set_xticks([])
        _note(ax, "no REPA cells: baseline only")
    if b is not None:
        ax.axhline(b, color=C_BASE, ls="--", lw=1.0, label=f"baseline (no REPA): {b:.1f}")
        # Above the axes: inside, it would sit on the bars.
        ax.legend(frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.1)
    _log_if_wide(ax, list(means["mean"]) + ([b] if b is not None else []))
    if ax.get_yscale() == "linear":
        top = max([*(means["mean"] + means["sem"].fillna(0)), b or 0, 1.0])
        ax.set_ylim(0, top * 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean test " + PPL_LABEL.replace("ELBO ", "ELBO\n", 1))
    return fig


def make_figures(runs: pd.DataFrame, train_logs: dict[str, str], out_dir: str | os.PathLike) -> list[Path]:
    """Write Figures 2-5 (PNG + PDF each) to ``out_dir``; returns the written paths."""
    out = Path(out_dir)
    paths = []
    with plt.rc_context(STYLE):
        paths += _save(fig_training_curves(runs, train_logs), out, "fig2_training_curves")
        for stem, by, xlabel in (("fig3_teacher", "teacher", "teacher model"),
                                 ("fig4_layer", "layer", "alignment layer (student block index)"),
                                 ("fig5_weight", "weight", "REPA weight λ")):
            paths += _save(fig_by(runs, by, xlabel), out, stem)
    return paths
