"""Figures 2-8: the paper's Figures 2-5 and the extra figures 6-8, from the aggregated runs and the training logs.

fig2_training_curves: validation ELBO perplexity vs step, baseline vs the best REPA configuration
    (both averaged over seeds, shaded from the lowest to the highest seed), with the step where
    REPA first reaches the baseline's final PPL.
fig3_teacher / fig4_layer / fig5_weight: mean test perplexity by teacher / layer / weight over
    the other axes and seeds, with 95 % Student-t intervals over the cells and the baseline as
    a dashed reference (a shaded band: its own interval when there are several baseline seeds).
fig6_heatmap_<teacher>: layer x weight test PPL of one teacher (mean over seeds), on a colour
    scale shared by all teachers and centred on the baseline.
fig7_pareto: test PPL vs training GPU-hours of every cell, with the Pareto front.
fig8_repa_loss: the REPA alignment loss during training, one panel per teacher.

Figures never read anything but the runs table and the logs, so redrawing never retrains.
Sized for one paper column (3.5 in; fig8 grows with the number of teachers); every figure is
written as PNG (200 dpi) and PDF.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import Normalize, TwoSlopeNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..analysis.runs import (  # noqa: E402
    baseline_mean_ppl,
    baseline_ppl_ci95,
    baseline_runs,
    best_repa_config,
    config_means,
    group_means,
    is_baseline,
    mean_curve,
    pareto_front,
    read_repa_curve,
    read_val_curve,
    repa_runs,
    repa_teachers,
    rolling_mean,
    train_logs_by_cell,
)
from ..io import atomic_write  # noqa: E402
from ..layout import figure_stems, heatmap_stem  # noqa: E402

FIGSIZE = (3.5, 2.6)
PPL_LABEL = "ELBO perplexity (lower is better)"
STYLE = {
    "font.size": 7.5, "axes.titlesize": 7.5, "axes.labelsize": 7.5, "legend.fontsize": 6.5,
    "xtick.labelsize": 6.5, "ytick.labelsize": 6.5, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "axes.grid.axis": "y", "grid.alpha": 0.3, "lines.linewidth": 1.2,
    "savefig.bbox": "tight", "savefig.pad_inches": 0.02, "pdf.fonttype": 42,
}
C_BASE, C_REPA, C_BAR = "0.35", "tab:blue", "tab:blue"


def _weight_label(w: float) -> str:
    return f"{w:.2f}"


# ------------------------------------------------------------------------ drawing

def save_figure(fig, out_dir: Path, stem: str) -> list[Path]:
    """stem.png and stem.pdf (no creation date, so reruns are byte-stable), each written atomically."""
    paths = [atomic_write(out_dir / f"{stem}.png", lambda p: fig.savefig(p, format="png", dpi=200)),
             atomic_write(out_dir / f"{stem}.pdf",
                          lambda p: fig.savefig(p, format="pdf", metadata={"CreationDate": None}))]
    plt.close(fig)
    return paths


def _log_if_wide(ax, values, axis: str = "y", ratio: float = 10) -> None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and x > 0])
    if v.size and v.max() / v.min() > ratio:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.4")


def _seeds_note(n: int) -> str:
    return f", mean of {n} seeds" if n > 1 else ""


def fig_training_curves(runs: pd.DataFrame, train_logs: dict[str, str]):
    """Baseline vs the best REPA configuration (lowest test PPL averaged over seeds)."""
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    base_cells = baseline_runs(runs)["cell"].tolist()
    best = best_repa_config(runs)
    series = []
    if base_cells:
        series.append(("base", base_cells, f"baseline (no REPA{_seeds_note(len(base_cells))})", C_BASE))
    if best is not None:
        series.append(("best", best["cells"], f"best REPA: {best['teacher']}, layer {best['layer']}, "
                       f"λ = {best['weight']:.2f}{_seeds_note(len(best['cells']))}", C_REPA))
    curves = {}
    for key, cells, label, color in series:
        curve = mean_curve([train_logs[c] for c in cells if c in train_logs], read_val_curve)
        if curve.empty:
            continue
        curves[key] = curve
        # the baseline wide and pale underneath, so it stays visible where the curves coincide
        style = dict(lw=2.6, alpha=0.55, zorder=2) if key == "base" else dict(lw=1.1, marker="o", ms=1.5, zorder=3)
        ax.plot(curve["step"], curve["value"], color=color, label=label, **style)
        if curve["n"].iloc[0] > 1:  # the spread of the seeds
            ax.fill_between(curve["step"], curve["lo"], curve["hi"], color=color, alpha=0.18, lw=0, zorder=1)
    if not curves:
        _note(ax, "no validation rows in the training logs")
    _log_if_wide(ax, [v for c in curves.values() for v in c["value"]], ratio=3)

    # Where the REPA run first matches the baseline's final quality (Section 5.1).
    if "base" in curves and "best" in curves:
        final = curves["base"]["value"].iloc[-1]
        ax.axhline(final, color=C_BASE, ls=":", lw=0.8)
        c = curves["best"]
        hit = c[c["value"] <= final]
        if not hit.empty:
            step = int(hit["step"].iloc[0])
            last = int(curves["base"]["step"].iloc[-1])
            ax.axvline(step, color=C_REPA, ls="--", lw=0.8)
            lo, hi = ax.get_xlim()
            right = (step - lo) / (hi - lo) < 0.6
            frac = f" ({100 * step / last:.0f} % of the steps)" if last else ""
            ax.annotate(f"REPA reaches the baseline's\nfinal PPL at step {step:,}{frac}", xy=(step, 0.55),
                        xycoords=ax.get_xaxis_transform(), xytext=(4 if right else -4, 0),
                        textcoords="offset points", fontsize=6.5, color=C_REPA,
                        ha="left" if right else "right", va="center")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation " + PPL_LABEL.replace("ELBO ", "ELBO\n", 1))
    if curves:
        ax.legend(frameon=False, loc="lower left", bbox_to_anchor=(0.0, 1.0), borderaxespad=0.1)
    return fig


def _baseline_reference(ax, runs: pd.DataFrame, horizontal: bool = True) -> None:
    """Dashed baseline line; a shaded band for its 95 % interval when it has several seeds."""
    st = baseline_ppl_ci95(runs)
    if st is None:
        return
    m, lo, hi, n = st
    label = f"baseline (no REPA): {m:.1f}" + (f", 95 % CI [{lo:.1f}, {hi:.1f}], {n} seeds" if n > 1 else "")
    ax.axhline(m, color=C_BASE, ls="--", lw=1.0, label=label, zorder=1)
    if n > 1 and np.isfinite(lo):
        ax.axhspan(lo, hi, color=C_BASE, alpha=0.12, lw=0, zorder=0)


def fig_by(runs: pd.DataFrame, by: str, xlabel: str):
    """Mean test PPL per teacher / layer / weight: a point with its 95 % CI whisker (the axis
    is zoomed to the data, so differences of a few tenths of a PPL stay visible)."""
    means = group_means(runs, by)
    if by == "teacher":
        means = means.sort_values("mean")  # ranked: the best teacher first
    labels = [_weight_label(v) if by == "weight" else str(v) for v in means.index]
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    x = np.arange(len(means))
    if len(means):
        ci = means["ci"].to_numpy(dtype=float)
        ax.errorbar(x, means["mean"], yerr=np.where(np.isnan(ci), 0.0, ci), fmt="o", color=C_REPA, ms=4,
                    elinewidth=1.0, capsize=3, zorder=3, label="mean over cells, 95 % CI")
        for xi, (m, n, h) in enumerate(zip(means["mean"], means["n"], ci)):
            # value and cell count beside each point: easier than reading them off the axis
            ax.annotate(f"{m:.1f}\n(n={n})", (xi, m), xytext=(6, 0), textcoords="offset points",
                        fontsize=5.5, va="center", ha="left", color="0.25",
                        bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8))
        ax.set_xticks(x, labels)
        ax.set_xlim(-0.5, len(means) - 0.5 + 0.35)
        if by == "teacher":
            ax.tick_params(axis="x", labelrotation=30)
            for t in ax.get_xticklabels():
                t.set_ha("right")
                t.set_rotation_mode("anchor")
    else:
        ax.set_xticks([])
        _note(ax, "no REPA cells: baseline only")
    _baseline_reference(ax, runs)
    vals = list(means["mean"]) + [v for v in [baseline_mean_ppl(runs)] if v is not None]
    _log_if_wide(ax, vals)
    ax.margins(y=0.12)
    ax.legend(frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean test " + PPL_LABEL.replace("ELBO ", "ELBO\n", 1))
    return fig


def heatmap_norm(runs: pd.DataFrame):
    """One colour scale for every teacher's heatmap: diverging around the baseline PPL when there
    is one (blue: better than the baseline, red: worse), else sequential over all cells."""
    vals = config_means(runs)["ppl"].to_numpy(float)
    base = baseline_mean_ppl(runs)
    if base is not None:
        dev = float(np.nanmax(np.abs(vals - base))) if vals.size else 0.0
        dev = dev if dev > 0 else max(abs(base) * 1e-3, 1e-6)
        return TwoSlopeNorm(vcenter=base, vmin=base - dev, vmax=base + dev), "RdBu_r"
    lo, hi = (float(np.nanmin(vals)), float(np.nanmax(vals))) if vals.size else (0.0, 1.0)
    return Normalize(lo, hi if hi > lo else lo + 1.0), "viridis"


def fig_heatmap(runs: pd.DataFrame, teacher: str, norm=None, cmap: str | None = None):
    """Layer (rows) x weight (columns) test PPL of one teacher, values written in the cells,
    its best cell outlined."""
    if norm is None:
        norm, cmap = heatmap_norm(runs)
    cells = config_means(runs)
    all_layers = sorted(int(v) for v in cells["layer"].unique())
    all_weights = sorted(float(v) for v in cells["weight"].unique())
    g = cells[cells["teacher"] == teacher]
    grid = np.full((len(all_layers), len(all_weights)), np.nan)
    nseeds = np.zeros_like(grid, dtype=int)
    for r in g.itertuples():
        i, j = all_layers.index(int(r.layer)), all_weights.index(float(r.weight))
        grid[i, j], nseeds[i, j] = r.ppl, r.n
    w = max(2.2, min(3.5, 1.2 + 0.55 * len(all_weights)))
    h = max(1.6, min(3.2, 0.8 + 0.35 * len(all_layers)))
    fig, ax = plt.subplots(figsize=(w, h), layout="constrained")
    ax.grid(False)
    if not grid.size:
        ax.set_xticks([])
        ax.set_yticks([])
        _note(ax, f"no cells of {teacher}")
        return fig
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto", origin="upper")
    cmap_obj = im.get_cmap()
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid[i, j]
            if np.isnan(v):
                ax.text(j, i, "–", ha="center", va="center", fontsize=6, color="0.5")
                continue
            rgb = cmap_obj(norm(v))[:3]
            dark = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 0.5
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6, color="white" if dark else "black")
    if np.isfinite(grid).any():
        i, j = np.unravel_index(np.nanargmin(grid), grid.shape)
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black", lw=1.2))
    ax.set_xticks(range(len(all_weights)), [_weight_label(v) for v in all_weights])
    ax.set_yticks(range(len(all_layers)), [str(v) for v in all_layers])
    ax.set_xlabel("REPA weight λ")
    ax.set_ylabel("alignment layer")
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)
    seeds = int(nseeds.max()) if nseeds.size else 0
    ax.set_title(f"teacher: {teacher}" + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
    cb = fig.colorbar(im, ax=ax, shrink=0.9, pad=0.02)
    base = baseline_mean_ppl(runs)
    cb.set_label("test ELBO PPL" + (f"\n(white = baseline {base:.1f})" if base is not None else ""), fontsize=6.5)
    cb.ax.tick_params(labelsize=6)
    if g.empty:
        _note(ax, f"no cells of {teacher}")
    return fig


def _cost_label(runs: pd.DataFrame, unit: str = "hours") -> str:
    dev = runs.get("device")
    on_cpu = dev is not None and len(dev) and (dev.astype(str) == "cpu").all()
    return (f"training device-{unit} (CPU: wall time × processes)" if on_cpu
            else f"training GPU-{unit} (wall time × GPUs)")


def fig_pareto(runs: pd.DataFrame):
    """Test PPL against training cost for every cell (all seeds), the Pareto front marked."""
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    ax.grid(True, axis="both", alpha=0.3)
    r = runs.dropna(subset=["test_ppl"]).copy()
    if "gpu_hours" not in r:
        r["gpu_hours"] = r["train_wall_s"] / 3600.0 * r.get("world_size", 1)
    r = r[np.isfinite(r["gpu_hours"].astype(float))]
    if r.empty:
        _note(ax, "no evaluated cells")
        return fig
    cost, ppl = r["gpu_hours"].to_numpy(float), r["test_ppl"].to_numpy(float)
    unit = "hours"
    if np.nanmax(cost) < 0.1:  # tiny runs (the CPU demo): seconds read better than 0.0031 h
        cost, unit = cost * 3600.0, "seconds"
    teachers = repa_teachers(r)
    colors = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(teachers)}
    base = is_baseline(r).to_numpy()
    groups = [(base, dict(marker="*", ms=8, color="0.2", label="baseline (no REPA)"))]
    groups += [((r["teacher"] == t).to_numpy(), dict(marker="o", ms=3.5, color=colors[t], alpha=0.8, label=t))
               for t in teachers]
    for m, style in groups:
        if m.any():
            ax.plot(cost[m], ppl[m], ls="none", zorder=2, **style)
    front = pareto_front(cost, ppl)
    fx, fy = cost[front], ppl[front]
    ax.step(fx, fy, where="post", color="black", lw=0.9, ls="-", zorder=3, label="Pareto front")
    ax.scatter(fx, fy, s=40, facecolors="none", edgecolors="black", lw=0.9, zorder=4)
    _log_if_wide(ax, cost, axis="x")
    _log_if_wide(ax, ppl)
    ax.margins(x=0.08, y=0.1)
    if len(front) <= 6:  # name the front's cells; more would clutter (the runs table has them all)
        fig.canvas.draw()  # final limits, so each label can go on the side with room
        to_axes = ax.transAxes.inverted()
        points_per_px = 72.0 / fig.dpi
        placed = []  # label anchors in points, to stack labels of nearby front cells
        for x, y, row, is_base in zip(fx, fy, r.iloc[front].itertuples(), base[front]):
            lab = "baseline" if is_base else f"{row.teacher} L{row.layer} λ={row.weight:.2f}"
            right = to_axes.transform(ax.transData.transform((x, y)))[0] > 0.55
            px, py = (v * points_per_px for v in ax.transData.transform((x, y)))
            dy = 5.0
            while any(abs(px - qx) < 70 and abs(py + dy - qy) < 7 for qx, qy in placed):
                dy -= 7
            placed.append((px, py + dy))
            ax.annotate(lab, (x, y), xytext=(-6 if right else 6, dy), textcoords="offset points",
                        fontsize=5.5, color="0.2", ha="right" if right else "left", va="bottom")
    ax.xaxis.set_major_locator(plt.MaxNLocator(5))
    ax.set_xlabel(_cost_label(r, unit))
    ax.set_ylabel("test " + PPL_LABEL.replace("ELBO ", "ELBO\n", 1))
    ax.legend(frameon=False, loc="lower left", bbox_to_anchor=(0.0, 1.0), borderaxespad=0.1, ncol=2)
    return fig


def fig_repa_loss(runs: pd.DataFrame, train_logs: dict[str, str]):
    """REPA alignment loss during training: one panel per teacher, one line per layer x weight
    (mean over seeds), colour = layer, line style = weight; a rolling mean smooths step noise."""
    repa = repa_runs(runs, evaluated=True)
    teachers = list(dict.fromkeys(repa["teacher"]))
    n = max(1, len(teachers))
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.5 if ncols == 1 else 7.0, 0.4 + 1.9 * nrows),
                             layout="constrained", sharey=True, squeeze=False)
    layers = sorted(int(v) for v in repa["layer"].dropna().unique())
    weights = sorted(float(v) for v in repa["weight"].dropna().unique())
    cmap = plt.get_cmap("viridis")
    lcolor = {l: cmap(0.85 * i / max(1, len(layers) - 1)) for i, l in enumerate(layers)}
    styles = ["-", "--", ":", "-."]
    wstyle = {w: styles[i % len(styles)] for i, w in enumerate(weights)}
    allv, smooth_w = [], 1
    for ax, t in zip(axes.flat, teachers):
        ax.set_title(f"teacher: {t}")
        for (layer, weight), g in repa[repa["teacher"] == t].groupby(["layer", "weight"], sort=True):
            curve = mean_curve([train_logs[c] for c in g["cell"] if c in train_logs], read_repa_curve)
            if curve.empty:
                continue
            smooth_w = max(1, len(curve) // 20)
            y = rolling_mean(curve["value"].to_numpy(float), smooth_w)
            allv += list(y)
            ax.plot(curve["step"], y, color=lcolor[int(layer)], ls=wstyle[float(weight)], lw=1.0)
        ax.set_xlabel("training step")
    for ax in axes.flat[len(teachers):]:
        ax.set_visible(False)
    if not teachers:
        _note(axes.flat[0], "no REPA cells")
    elif not allv:
        for ax in axes.flat[:len(teachers)]:
            _note(ax, "no REPA loss in the training logs")
    if allv:
        _log_if_wide(axes.flat[0], allv, ratio=5)
    for ax in axes[:, 0]:
        ax.set_ylabel("REPA loss (before λ)")
    handles = ([Line2D([], [], color=lcolor[l], lw=1.2, label=f"layer {l}") for l in layers]
               + [Line2D([], [], color="0.3", ls=wstyle[w], lw=1.0, label=f"λ = {_weight_label(w)}") for w in weights])
    if handles and allv:
        fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 5), frameon=False)
    return fig


def make_figures(runs: pd.DataFrame, train_logs: dict[str, str], out_dir: str | os.PathLike,
                 teachers: list[str] | None = None) -> list[Path]:
    """Write every figure (PNG + PDF each) to ``out_dir``; returns the written paths. One heatmap
    per teacher in ``teachers`` (default: the teachers in ``runs``), all on one colour scale."""
    out = Path(out_dir)
    if teachers is None:
        teachers = repa_teachers(runs, evaluated=True)
    norm, cmap = heatmap_norm(runs)
    drawers = {
        "fig2_training_curves": lambda: fig_training_curves(runs, train_logs),
        "fig3_teacher": lambda: fig_by(runs, "teacher", "teacher model"),
        "fig4_layer": lambda: fig_by(runs, "layer", "alignment layer (student block index)"),
        "fig5_weight": lambda: fig_by(runs, "weight", "REPA weight λ"),
        **{heatmap_stem(t): (lambda t=t: fig_heatmap(runs, t, norm, cmap)) for t in teachers},
        "fig7_pareto": lambda: fig_pareto(runs),
        "fig8_repa_loss": lambda: fig_repa_loss(runs, train_logs),
    }
    paths = []
    with plt.rc_context(STYLE):
        for stem in figure_stems(teachers):  # layout's list and order: what the workflow declares
            paths += save_figure(drawers[stem](), out, stem)
    return paths


def figures_main(runs_path: str, logs: list[str], out_dir: str, teachers: list[str] | None) -> list[Path]:
    """What `repa-mdlm figures` does (its options and defaults: cli.figures): logs are matched to
    cells by their run folder's name."""
    runs = pd.read_parquet(runs_path)
    return make_figures(runs, train_logs_by_cell(logs), out_dir, teachers)
