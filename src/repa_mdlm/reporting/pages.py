"""Our Markdown and CSV files as pages of the Snakemake HTML report, in Table 1's style.

The report shows HTML inline, not Markdown: the verdict (verdict.md) and the comparison's CSV files
become pages. Only the Markdown our own writers emit is understood: headings, paragraphs, "- "
lists, pipe tables with an alignment row, **bold**, *italic* and `code`.
"""

from __future__ import annotations

import html
import numbers
import re

import pandas as pd

from ..analysis.format import NA, missing
from .render import TABLE_STYLE, html_page, table_page

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
    return html_page(title or markdown_title(text, "report"), TABLE_STYLE + _PAGE_STYLE, markdown_html(text))


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

    from ..io import atomic_write_text
    from ..layout import report_page

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
