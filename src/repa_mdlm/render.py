"""Rendering results as text: the number formatters shared by Table 1 and the verdict, Table 1 as
markdown, LaTeX and HTML, the one HTML page shell of the report's pages, and our Markdown and CSV
files (the verdict, the comparison's tables) as such pages."""

from __future__ import annotations

import html
import math
import numbers
import re
from typing import Mapping

import pandas as pd

# ------------------------------------------------------------------ numbers

NA, NO_INTERVAL = "n/a", "–"


def missing(v) -> bool:
    """None, NaN, pd.NA or an infinite float: a number that cannot be printed."""
    return v is None or pd.isna(v) or (isinstance(v, float) and not math.isfinite(v))


def number(v, d: int = 1, signed: bool = False) -> str:
    """``v`` with ``d`` decimals (a sign always, if ``signed``); "n/a" if missing."""
    if missing(v):
        return NA
    return f"{v:+.{d}f}" if signed else f"{v:.{d}f}"


def interval(lo, hi, d: int = 1, signed: bool = False) -> str:
    """"[lo, hi]" with ``d`` decimals (signed: "[-1.0, +2.0]"); "–" if a bound is missing."""
    if missing(lo) or missing(hi):
        return NO_INTERVAL
    return f"[{number(lo, d, signed)}, {number(hi, d, signed)}]"


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
_TABLE_STYLE = ("body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse}"
                "th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}"
                "th:first-child,td:first-child{text-align:left}tr.base td{color:#555;font-style:italic}"
                "p{max-width:60em;color:#333}")


def _ci(r: Mapping, prefix: str, d: int) -> str:
    return interval(r.get(f"{prefix}_ci95_lo"), r.get(f"{prefix}_ci95_hi"), d)


def _excludes_zero(r: Mapping, prefix: str, d: int) -> bool:
    """Whether the printed 95 % interval of ``prefix`` lies wholly on one side of zero."""
    lo, hi = number(r.get(f"{prefix}_ci95_lo"), d), number(r.get(f"{prefix}_ci95_hi"), d)
    return NA not in (lo, hi) and (float(lo) > 0 or float(hi) < 0)


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
            f"95 % CI: Student-t interval over the cells' test PPLs (spread across layers, weights and seeds); "
            f"PPL Red. CI by Welch's interval against the baseline"
            f"{' (taken as exact: a single seed)' if n == 1 else ''}. "
            f"Time Inc.: time in optimisation steps (no start-up, validation or checkpoints), each cell against "
            f"its own seed's baseline, in % of the baseline's mean; its CI is Student-t over the seeds' mean "
            f"paired differences (none with a single seed)"
            f"{f'; without a baseline of their seed, left out: {len(unpaired)} cell(s)' if unpaired else ''}. "
            f"Bold: the best of a column; a PPL Red. or Time Inc. only where its 95 % CI excludes zero, a Score "
            f"only where both do.")


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
    return [_baseline_note(t)] + _amortized_notes(t)


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
    return html_page(title, _TABLE_STYLE, f"<h3>{esc(title)}</h3><table><thead><tr>{head}</tr></thead>"
                                          f"<tbody>{''.join(body)}</tbody></table>{notes}")


# ------------------------------------------------------------------ the tables beside Table 1

def markdown_table(header: list[str], rows: list[list[str]], left_columns: int = 1) -> str:
    """A Markdown table: the first `left_columns` columns are labels (left), the rest numbers (right)."""
    align = "|" + "---|" * left_columns + "---:|" * (len(header) - left_columns)
    return "\n".join(["| " + " | ".join(header) + " |", align, *("| " + " | ".join(r) + " |" for r in rows)])


def table_page(title: str, header: list[str], rows: list[list[str]], notes: list[str], left_columns: int = 1) -> str:
    """A report page holding one table of formatted cells and its notes, in Table 1's style."""
    esc = html.escape
    style = _TABLE_STYLE + (f"th:nth-child(-n+{left_columns}),td:nth-child(-n+{left_columns}){{text-align:left}}"
                            if left_columns > 1 else "")
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    paragraphs = "".join(f"<p>{esc(n)}</p>" for n in notes)
    return html_page(title, style, f"<h3>{esc(title)}</h3><table><thead><tr>{head}</tr></thead>"
                                   f"<tbody>{body}</tbody></table>{paragraphs}")


# ------------------------------------------------------------------ Markdown and CSV as report pages
# The Snakemake report shows HTML inline, not Markdown: the verdict (verdict.md) and the comparison's
# CSV files become pages in Table 1's style. Only the Markdown our own writers emit is understood:
# headings, paragraphs, "- " lists, pipe tables with an alignment row, **bold**, *italic* and `code`.

_PAGE_STYLE = ("th.l,td.l{text-align:left}th.c,td.c{text-align:center}th.r,td.r{text-align:right}"
               "li{max-width:60em;color:#333;margin:.25em 0}code{background:#f3f3f3;padding:0 2px}")
_HEADING = re.compile(r"(#{1,6})\s+(.*?)\s*#*\s*$")
_ALIGNMENT = re.compile(r"\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC = re.compile(r"\*(?=[^\s*])(.+?)(?<=[^\s*])\*")
_PIPE = re.compile(r"(?<!\\)\|")
_ALIGN = {(True, True): "c", (False, True): "r"}  # (starts, ends with ":") -> class; "---" and ":---" are left


def markdown_inline(text: str) -> str:
    """One line's text as HTML: `code` verbatim, then **bold** and *italic*; everything escaped."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(part[1:-1], quote=False)}</code>")
        else:
            out.append(_ITALIC.sub(r"<i>\1</i>", _BOLD.sub(r"<b>\1</b>", html.escape(part, quote=False))))
    return "".join(out)


def _is_table(lines: list[str], i: int) -> bool:
    return lines[i].lstrip().startswith("|") and i + 1 < len(lines) and bool(_ALIGNMENT.fullmatch(lines[i + 1]))


def _row(line: str) -> list[str]:
    """The cells of a pipe-table row (an escaped \\| stays in its cell)."""
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [cell.strip().replace("\\|", "|") for cell in _PIPE.split(line)]


def _table(lines: list[str], i: int, out: list[str]) -> int:
    header, aligns = _row(lines[i]), [_ALIGN.get((s[:1] == ":", s[-1:] == ":"), "l") for s in _row(lines[i + 1])]
    aligns += ["l"] * (len(header) - len(aligns))
    cells = lambda tag, row: "".join(f"<{tag} class='{a}'>{markdown_inline(c)}</{tag}>" for c, a in zip(row, aligns))
    i, body = i + 2, []
    while i < len(lines) and lines[i].lstrip().startswith("|"):
        row = _row(lines[i])
        body.append(f"<tr>{cells('td', row + [''] * (len(header) - len(row)))}</tr>")
        i += 1
    out.append(f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    return i


def _list(lines: list[str], i: int, out: list[str]) -> int:
    """A "- " list; an indented line continues the item above it."""
    items = []
    while i < len(lines) and (lines[i].startswith("- ") or (items and lines[i][:1].isspace() and lines[i].strip())):
        if lines[i].startswith("- "):
            items.append(lines[i][2:].strip())
        else:
            items[-1] += " " + lines[i].strip()
        i += 1
    out.append("<ul>" + "".join(f"<li>{markdown_inline(item)}</li>" for item in items) + "</ul>")
    return i


def _starts_block(lines: list[str], i: int) -> bool:
    line = lines[i]
    return not line.strip() or bool(_HEADING.match(line)) or line.startswith("- ") or _is_table(lines, i)


def markdown_html(text: str) -> str:
    """Our Markdown as an HTML fragment; a heading of level n becomes <h(n+1)> (the page title's <h3> level)."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        heading = _HEADING.match(lines[i])
        if not lines[i].strip():
            i += 1
        elif heading:
            level = min(len(heading.group(1)) + 1, 6)
            out.append(f"<h{level}>{markdown_inline(heading.group(2))}</h{level}>")
            i += 1
        elif _is_table(lines, i):
            i = _table(lines, i, out)
        elif lines[i].startswith("- "):
            i = _list(lines, i, out)
        else:
            start, i = i, i + 1
            while i < len(lines) and not _starts_block(lines, i):
                i += 1
            out.append(f"<p>{markdown_inline(' '.join(line.strip() for line in lines[start:i]))}</p>")
    return "".join(out)


def markdown_title(text: str, default: str) -> str:
    """The plain text of the document's first heading (`default` without one)."""
    heading = next((m for m in map(_HEADING.match, text.splitlines()) if m), None)
    return heading.group(2).replace("**", "").replace("`", "") if heading else default


def markdown_page(text: str, title: str | None = None) -> str:
    """A Markdown document (the verdict) as a report page in Table 1's style (title: its first heading's)."""
    return html_page(title or markdown_title(text, "report"), _TABLE_STYLE + _PAGE_STYLE, markdown_html(text))


def cell_text(v) -> str:
    """A CSV value for a page: integers as integers, other numbers to 4 significant digits, "n/a" if missing."""
    if isinstance(v, str):
        return v
    if missing(v):
        return NA
    if isinstance(v, numbers.Integral):  # Python's and numpy's integers (and booleans)
        return str(v)
    v = float(v)
    if v.is_integer() and abs(v) < 1e6:  # an integer column that holds a missing value reads as floats
        return str(int(v))
    return f"{v:.1f}" if abs(v) >= 1e4 else f"{v:.4g}" if abs(v) >= 1e-3 else f"{v:.3g}"


def frame_page(title: str, frame: pd.DataFrame, notes: list[str]) -> str:
    """Every column of a table (a CSV the comparison wrote) as a report page, via table_page: the
    leading text columns are labels (left-aligned), the rest numbers."""
    text = [not pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    left = next((j for j, is_text in enumerate(text) if not is_text), len(text))
    rows = [[cell_text(v) for v in row] for row in frame.itertuples(index=False)]
    return table_page(title, [str(c) for c in frame.columns], rows, notes, left_columns=max(left, 1))


def _read_csv(path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # no rows and no columns (compare's teacher_features.csv without teachers)
        return pd.DataFrame()


def report_pages_main(sources: list[str], out_dir: str, titles: list[str] = ()) -> list:
    """What `repa-mdlm report-pages` does: each Markdown (.md) or CSV (.csv) file as out_dir/<stem>.html
    (layout.report_page). A Markdown page is titled by its first heading, a CSV page by its title."""
    from pathlib import Path

    from .io import atomic_write_text
    from .layout import report_page

    if titles and len(titles) != len(sources):
        raise ValueError(f"--titles has {len(titles)} titles for {len(sources)} sources; give one per source")
    written = []
    for source, title in zip(sources, list(titles) or [None] * len(sources)):
        source = Path(source)
        if source.suffix == ".md":
            text = source.read_text(encoding="utf-8")
            page = markdown_page(text, markdown_title(text, title or source.name))
        elif source.suffix == ".csv":
            title = title or source.name
            note = f"Every column of {source.name}, to 4 significant digits; n/a: not computed."
            page = frame_page(title[:1].upper() + title[1:], _read_csv(source), [note])
        else:
            raise ValueError(f"{source}: a report page is made from a .md or .csv file, not {source.suffix!r}")
        written.append(atomic_write_text(Path(out_dir) / report_page(source.name), page))
    return written
