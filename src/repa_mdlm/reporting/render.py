"""Rendering results as text: Table 1 as markdown, LaTeX and HTML, and the one HTML page shell of the
report's pages (pages.py turns our Markdown and CSV files into such pages); numbers are written by
analysis/format.py."""

from __future__ import annotations

import html
from typing import Mapping

import pandas as pd

from ..analysis.format import NA, NO_INTERVAL, interval, number

# ------------------------------------------------------------------ HTML page

def html_page(title: str, style: str, body: str) -> str:
    """A self-contained page (the Snakemake report shows HTML inline, not markdown)."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>\n")


# ------------------------------------------------------------------ Table 1

_BEST = {"ppl_reduction_pct": max, "time_increase_pct": min, "score": max}
# differences from the baseline: bold only where their 95 % interval, as printed, excludes zero
_DIFFERENCES = ("ppl_reduction_pct", "time_increase_pct")
_HEADER = ["Teacher", "Cells", "Mean PPL", "95 % CI", "PPL Red. (%)", "95 % CI", "Time Inc. (%)", "95 % CI", "Score"]
# (value column, decimals, CI column prefix or None); the CI cells sit right after their value.
_COLUMNS = [("ppl_mean", 2, "ppl_mean"), ("ppl_reduction_pct", 1, "ppl_reduction_pct"),
            ("time_increase_pct", 1, "time_increase_pct"), ("score", 2, None)]
TABLE_STYLE = ("body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse}"
                "th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}"
                "th:first-child,td:first-child{text-align:left}tr.base td{color:#555;font-style:italic}"
                "p{max-width:60em;color:#333}")


def _ci(r: Mapping, prefix: str, d: int) -> str:
    return interval(r.get(f"{prefix}_ci95_lo"), r.get(f"{prefix}_ci95_hi"), d)


def _excludes_zero(r: Mapping, prefix: str, d: int) -> bool:
    """Whether the printed 95 % interval of ``prefix`` lies wholly on one side of zero; for the PPL
    reduction, above it (the least harmful of teachers that all raise the PPL is not bolded)."""
    lo, hi = number(r.get(f"{prefix}_ci95_lo"), d), number(r.get(f"{prefix}_ci95_hi"), d)
    if NA in (lo, hi):
        return False
    return float(lo) > 0 or (float(hi) < 0 and prefix != "ppl_reduction_pct")


def _formatted(t: pd.DataFrame) -> tuple[list[list[str]], list[list[bool]]]:
    """Cell strings (paper columns plus CI columns) and bold flags. Bold is the best value of its
    column, judged on the printed values so ties that look equal are bolded together; a PPL Red. or
    Time Inc. only where its 95 % interval excludes zero (an unsupported difference is never bold),
    and a Score only where both of its parts' intervals do."""
    cells, kinds, supported = [], [], []
    for r in t.to_dict("records"):
        row, kind = [str(r["teacher"]), str(r["n_cells"])], [None, None]
        for col, d, ci in _COLUMNS:
            row.append(number(r.get(col), d))
            kind.append(col)
            if ci:
                row.append(_ci(r, ci, d))
                kind.append(None)
        cells.append(row)
        kinds = kind
        shown = {col: _excludes_zero(r, col, d) for col, d, _ in _COLUMNS if col in _DIFFERENCES}
        supported.append({**shown, "score": all(shown.values())})  # a ratio of two unsupported parts is not
    bold = [[False] * len(_HEADER) for _ in cells]
    for j, col in enumerate(kinds):
        if col not in _BEST:
            continue
        vals = [float(row[j]) for row in cells if row[j] != NA]
        if vals:
            best = _BEST[col](vals)
            for i, row in enumerate(cells):
                bold[i][j] = row[j] != NA and float(row[j]) == best and supported[i].get(col, True)
    return cells, bold


def _baseline_ci(t: pd.DataFrame) -> str:
    """The baseline's 95 % interval of its mean PPL, "–" without one (a single seed)."""
    return interval(t.attrs.get("baseline_ppl_ci95_lo"), t.attrs.get("baseline_ppl_ci95_hi"), 2)


def _baseline_note(t: pd.DataFrame) -> str:
    a = t.attrs
    n = a.get("baseline_n", "?")
    ci = _baseline_ci(t)
    ci = "" if ci == NO_INTERVAL else f" (95 % CI {ci})"
    unpaired = a.get("time_unpaired_cells") or []
    return (f"Baseline (no REPA): mean PPL {a.get('baseline_ppl', float('nan')):.2f}{ci}, "
            f"mean time in optimisation steps {a.get('baseline_step_seconds', float('nan')):.0f} s ({n} seed(s)). "
            f"Teacher values are means over all its layers, weights and seeds; Score = PPL Red. / Time Inc. "
            f"Mean PPL CI: Student-t interval over the cells' test PPLs (spread across layers, weights and "
            f"seeds). PPL Red. and Time Inc. (time in optimisation steps: no start-up, validation or "
            f"checkpoints): each cell against its own seed's baseline, in % of the baseline's mean; their CIs "
            f"are Student-t over the seeds' mean paired differences (none with a single seed)"
            f"{f'; without a baseline of their seed, left out: {len(unpaired)} cell(s)' if unpaired else ''}. "
            f"Bold: the best of a column; a PPL Red. only where its 95 % CI lies above zero, a Time Inc. only "
            f"where its CI excludes zero, a Score only where both do.")


def _amortized_notes(t: pd.DataFrame) -> list[str]:
    if not t.attrs.get("amortized"):
        return []
    notes = []
    for r in t.to_dict("records"):
        if r.get("cache_cells"):
            notes.append(f"{r['teacher']}: feature cache {r['cache_wall_s']:.1f} s over {r['cache_cells']} cells "
                         f"= +{r['cache_wall_s_per_cell']:.1f} s per cell")
    lines = ["Training time includes each cell's share of its teacher's feature-cache cost "
             "(the teacher_features jobs' wall_s, split evenly over the teacher's cached cells); "
             "online-mode cells run the teacher inside training and get no cache cost."]
    if notes:
        lines.append("; ".join(notes) + ".")
    if t.attrs.get("online_teachers"):
        lines.append(f"Online mode (no cache cost): {', '.join(t.attrs['online_teachers'])}.")
    lines += [f"WARNING: {p}" for p in t.attrs.get("cache_problems", [])]
    return lines


def _notes(t: pd.DataFrame) -> list[str]:
    halving = [t.attrs["halving_note"]] if t.attrs.get("halving_note") else []
    return [_baseline_note(t)] + _amortized_notes(t) + halving


def table1_markdown(t: pd.DataFrame) -> str:
    cells, bold = _formatted(t)
    esc = lambda s: s.replace("|", r"\|")
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "|".join(["---"] + ["---:"] * (len(_HEADER) - 1)) + "|"]
    for row, b in zip(cells, bold):
        lines.append("| " + " | ".join(f"**{esc(s)}**" if f else esc(s) for s, f in zip(row, b)) + " |")
    return "\n".join(lines) + "\n\n" + "\n\n".join(_notes(t)) + "\n"


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in s)


def _tex_cell(s: str, j: int, b: bool) -> str:
    s = tex_escape(s).replace(NO_INTERVAL, "--")
    if j >= 2:
        s = s.replace("[-", "[$-$").replace(", -", ", $-$")
        if s.startswith("-"):
            s = "$-$" + s[1:]  # a real minus sign, not a hyphen
    return rf"\textbf{{{s}}}" if b else s


def table1_latex(t: pd.DataFrame) -> str:
    cells, bold = _formatted(t)
    header = ["Teacher", "Cells", "Mean PPL", r"95\,\% CI", r"PPL Red.\ (\%)", r"95\,\% CI", r"Time Inc.\ (\%)",
              r"95\,\% CI", "Score"]
    a = t.attrs
    lines = [f"% {tex_escape(line)}" for line in _notes(t)]
    lines += [r"\begin{tabular}{l" + "r" * (len(_HEADER) - 1) + "}", r"\toprule", " & ".join(header) + r" \\",
              r"\midrule"]
    if "baseline_ppl" in a:
        ci = _baseline_ci(t).replace(NO_INTERVAL, "--")
        lines += [rf"Baseline (no REPA) & {a.get('baseline_n', '')} & {a['baseline_ppl']:.2f} & {ci}"
                  + r" & --" * (len(_HEADER) - 4) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_cell(s, j, b) for j, (s, b) in enumerate(zip(row, bl))) + r" \\"
              for row, bl in zip(cells, bold)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def table1_html(t: pd.DataFrame, title: str) -> str:
    """Table 1 as a page of the Snakemake report."""
    cells, bold = _formatted(t)
    a = t.attrs
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _HEADER)
    body = []
    if "baseline_ppl" in a:
        body.append(f"<tr class='base'><td>Baseline (no REPA)</td><td>{a.get('baseline_n', '')}</td>"
                    f"<td>{a['baseline_ppl']:.2f}</td><td>{_baseline_ci(t)}</td>" + "<td>–</td>" * (len(_HEADER) - 4)
                    + "</tr>")
    for row, bl in zip(cells, bold):
        body.append("<tr>" + "".join(f"<td>{'<b>' + esc(s) + '</b>' if b else esc(s)}</td>"
                                     for s, b in zip(row, bl)) + "</tr>")
    notes = "".join(f"<p>{esc(n)}</p>" for n in _notes(t))
    return html_page(title, TABLE_STYLE, f"<h3>{esc(title)}</h3><table><thead><tr>{head}</tr></thead>"
                                          f"<tbody>{''.join(body)}</tbody></table>{notes}")


# ------------------------------------------------------------------ the tables beside Table 1

def markdown_table(header: list[str], rows: list[list[str]], left_columns: int = 1) -> str:
    """A Markdown table: the first `left_columns` columns are labels (left), the rest numbers (right)."""
    align = "|" + "---|" * left_columns + "---:|" * (len(header) - left_columns)
    return "\n".join(["| " + " | ".join(header) + " |", align, *("| " + " | ".join(r) + " |" for r in rows)])


def table_page(title: str, header: list[str], rows: list[list[str]], notes: list[str], left_columns: int = 1) -> str:
    """A report page holding one table of formatted cells and its notes, in Table 1's style."""
    esc = html.escape
    style = TABLE_STYLE + (f"th:nth-child(-n+{left_columns}),td:nth-child(-n+{left_columns}){{text-align:left}}"
                            if left_columns > 1 else "")
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    paragraphs = "".join(f"<p>{esc(n)}</p>" for n in notes)
    return html_page(title, style, f"<h3>{esc(title)}</h3><table><thead><tr>{head}</tr></thead>"
                                   f"<tbody>{body}</tbody></table>{paragraphs}")
