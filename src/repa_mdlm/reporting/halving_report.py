"""A halving sweep's decisions in one place: tables/halving.{csv,md,html} (every rung's rows, the
configurations that reached the end, the training steps spent) and the note under Table 1."""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from ..analysis.halving import DECISION_COLUMNS
from ..io import atomic_write_text
from ..layout import HALVING_FIGURE, HALVING_FILES
from .render import TABLE_STYLE, html_page, markdown_table


def read_decisions(paths: list[str]) -> pd.DataFrame:
    """Every rung's decisions (tables/halving/rung<k>.csv), one row per cell and rung."""
    table = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True) if paths else \
        pd.DataFrame(columns=list(DECISION_COLUMNS))
    return table.sort_values(["rung", "rank", "cell"], kind="stable", ignore_index=True)


def stopped_at(table: pd.DataFrame) -> dict[int, list[str]]:
    """{rung: configurations stopped there}."""
    stopped = table[table["decision"] == "stopped"]
    return {int(r): sorted(set(g["configuration"])) for r, g in stopped.groupby("rung")}


def _counts(table: pd.DataFrame) -> tuple[list[str], int, list[str]]:
    steps_of = table.groupby("rung")["step"].first().to_dict()
    stopped = stopped_at(table)
    last = int(table["rung"].max())
    survivors = sorted(set(table[(table["rung"] == last) & (table["decision"] == "kept")]["configuration"]))
    parts = [f"{len(stopped.get(r, []))} at rung {r} (step {int(steps_of[r])})" for r in sorted(steps_of)]
    return parts, len(survivors), survivors


def table1_note(halving_csv: str) -> str:
    table = pd.read_csv(halving_csv)
    if table.empty:
        return ""
    parts, kept, _ = _counts(table)
    judged = table[table["rung"] == 1]["configuration"].nunique()
    return (f"Successive halving: {kept} of {judged} REPA configurations reached the end and are listed; "
            f"stopped: {', '.join(parts)} (tables/halving.md). The baseline is never judged.")


def halving_figure(table: pd.DataFrame, stopped_records: list[str], logs: list[str], out_dir: str | os.PathLike) -> list[Path]:
    """figures/fig11_halving: every cell's validation PPL against the step; the cells that reached the end
    (their logs) in colour, the stopped ones (their rung records) in grey, ending in a cross where their
    configuration stopped; a dashed line at each rung."""
    from ..analysis.runs import read_val_curve
    from ..config import Cell
    from ..io import read_json_object
    from .plots import FIGSIZE, PPL_LABEL, STYLE, plt, save_figure

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=FIGSIZE)
        for step in sorted(set(table["step"])):
            ax.axvline(step, color="0.6", linestyle="--", linewidth=0.6)
        for path in stopped_records:
            record = read_json_object(path, "rung record", rule="train_rung")
            if not record["val_curve"]:  # diverged before its rung: nothing to draw
                continue
            x, y = zip(*record["val_curve"])
            ax.plot(x, y, color="0.7", linewidth=0.7)
            ax.plot(x[-1], y[-1], marker="x", color="0.5", markersize=3, linestyle="none")
        for path in logs:
            name, curve = Path(path).parent.name, read_val_curve(path)
            baseline = Cell.parse(name).is_baseline
            ax.plot(curve["step"], curve["val_ppl"], color="black" if baseline else None,
                    linestyle=":" if baseline else "-", label=name)
        ax.set(xlabel="step", ylabel=PPL_LABEL.replace("ELBO", "validation ELBO"), yscale="log")
        ax.plot([], [], color="0.7", marker="x", markersize=3, label="stopped at a rung")
        ax.legend(frameon=False, fontsize=5)
        return save_figure(fig, Path(out_dir), HALVING_FIGURE)


def halving_report_main(decisions: list[str], out_dir: str | os.PathLike, steps: int, baselines: int,
                        eta: int, stopped_records: list[str] = (), logs: list[str] = (),
                        figures_dir: str | None = None) -> list[Path]:
    """tables/halving.{csv,md,html}, and with figures_dir its figure (halving_figure). steps: train.steps;
    baselines: baseline cells (they run to the end)."""
    table = read_decisions(decisions)
    if figures_dir:
        halving_figure(table, list(stopped_records), list(logs), figures_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_file, md_file, html_file = HALVING_FILES
    atomic_write_text(out / csv_file, table.to_csv(index=False))
    parts, kept, survivors = _counts(table)
    cells = table[table["rung"] == 1]["cell"].tolist()
    stop_step = {row.cell: int(row.step) for row in table[table["decision"] == "stopped"].itertuples()}
    spent = sum(stop_step.get(c, steps) for c in cells) + baselines * steps
    full = (len(cells) + baselines) * steps
    summary = [f"eta {eta}; rungs at steps {sorted(int(s) for s in set(table['step']))} and {steps} (the end)",
               f"{kept} of {table[table['rung'] == 1]['configuration'].nunique()} configurations reached the end: "
               + ", ".join(survivors),
               f"stopped: {', '.join(parts)}",
               f"training steps: {spent} of the full grid's {full} ({100 * spent / full:.1f} %), "
               f"{baselines} baseline cell(s) included"]
    rows = [[str(v) for v in (r.rung, r.step, r.configuration, r.cell, f"{r.metric:.4g}", r.rank, r.decision, r.why)]
            for r in table.itertuples()]
    header = ["rung", "step", "configuration", "cell", "mean val PPL", "rank", "decision", "why"]
    md = ("# Successive halving: every rung's decisions\n\n" + "\n".join(f"- {s}" for s in summary) + "\n\n"
          + markdown_table(header, rows, left_columns=4).rstrip("\n") + "\n")
    atomic_write_text(out / md_file, md)
    esc = html.escape
    body = ("<h3>Successive halving: every rung's decisions</h3>" + "".join(f"<p>{esc(s)}</p>" for s in summary)
            + "<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in rows)
            + "</tbody></table>")
    atomic_write_text(out / html_file, html_page("Successive halving", TABLE_STYLE, body))
    return [out / name for name in HALVING_FILES]
