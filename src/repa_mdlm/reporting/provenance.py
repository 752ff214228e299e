"""The sweep's provenance beside Table 1: tables/provenance.{json,md,html} from every cell's run record
(training/provenance.py collects a record and gathers a sweep's)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..io import atomic_write_json, atomic_write_text
from ..layout import PROVENANCE_FILES
from ..training.provenance import read_cell_records, sweep_provenance
from .render import html_page


def _cells(cells: list[str], at_most: int = 6) -> str:
    return ", ".join(cells[:at_most]) + (f" and {len(cells) - at_most} more" if len(cells) > at_most else "")


def _sections(p: Mapping[str, Any]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(heading, second column, [(value, cells)]) for the commit, package versions and GPU tables."""
    single = {n: g for n, g in p["versions"].items() if len(g) == 1}
    mixed = {n: g for n, g in p["versions"].items() if len(g) > 1}
    return [
        ("Commit", "cells", [(v, f"{len(c)}: {_cells(c)}") for v, c in p["commits"].items()]),
        ("Packages (one version in every cell)", "version", [(n, next(iter(g))) for n, g in single.items()]),
        ("Packages with several versions", "cells", [(f"{n} {v}", f"{len(c)}: {_cells(c)}")
                                                     for n, g in mixed.items() for v, c in g.items()]),
        ("GPU", "cells", [(v, f"{len(c)}: {_cells(c)}") for v, c in p["gpus"].items()]),
    ]


def provenance_markdown(p: Mapping[str, Any]) -> str:
    lines = [f"# Provenance of the sweep ({p['n_cells']} cells)", ""]
    lines += [f"- **Warning:** {w}" for w in p["warnings"]] or ["No warnings: one commit, clean trees, "
                                                                 "the same package versions in every cell."]
    for heading, column, rows in _sections(p):
        if rows:
            lines += ["", f"## {heading}", "", f"| | {column} |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    lines += ["", "Every cell's record (host, Slurm ids, config hash, hub revisions): provenance.json.", ""]
    return "\n".join(lines)


def provenance_html(p: Mapping[str, Any]) -> str:
    esc = html.escape
    warnings = "".join(f"<li class='warn'>{esc(w)}</li>" for w in p["warnings"])
    body = [f"<h3>Provenance of the sweep ({p['n_cells']} cells)</h3>",
            f"<ul>{warnings}</ul>" if warnings else "<p>No warnings: one commit, clean trees, the same package "
                                                    "versions in every cell.</p>"]
    for heading, column, rows in _sections(p):
        if rows:
            body.append(f"<h4>{esc(heading)}</h4><table><tr><th></th><th>{esc(column)}</th></tr>" + "".join(
                f"<tr><td>{esc(a)}</td><td>{esc(b)}</td></tr>" for a, b in rows) + "</table>")
    style = ("body{font-family:sans-serif;font-size:14px;margin:1em}td{padding:3px 10px;border-bottom:1px solid #ddd}"
             "li.warn{color:#a00;font-weight:bold}")
    return html_page("Provenance of the sweep", style, "".join(body))


def write_sweep_provenance(metrics: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """tables/provenance.{json,md,html} from the cells' train_summary.json; nothing when no cell has one."""
    records = read_cell_records(metrics)
    if not records:
        return []
    p = sweep_provenance(records)
    out = Path(out_dir)
    as_json, as_md, as_html = PROVENANCE_FILES
    atomic_write_json(out / as_json, p)
    return [out / as_json, atomic_write_text(out / as_md, provenance_markdown(p)),
            atomic_write_text(out / as_html, provenance_html(p))]
