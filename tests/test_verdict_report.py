"""The verdict in the HTML report: our Markdown (verdict.md) and the comparison's CSV files become
pages in Table 1's style, and the workflow's report shows them beside Table 1."""

from __future__ import annotations

import base64
import json
import re

import pandas as pd
import pytest

from repa_mdlm import layout
from repa_mdlm.analysis.verdict import COMPARISON_FILES, compare_inputs, verdict_markdown
from repa_mdlm.reporting.pages import cell_text, frame_page, markdown_html, markdown_page, report_pages_main

from .conftest import REPO
from .test_compare import runs_table
from .test_workflow import snakemake


def _verdict(title: str = "REPA study") -> tuple[str, object]:
    runs = runs_table({("ta", 2, 0.5): [90.0, 95.0, 92.0], ("tb", 3, 1.0): [101.0, 106.0, 96.0]})
    v = compare_inputs(runs, {}, None, [], [], [], title=title)
    return verdict_markdown(v), v


def test_the_real_verdict_becomes_html_with_a_table_per_pipe_table():
    text, _ = _verdict("Study <b> & co")
    pipe_tables = sum(1 for a, b in zip(text.splitlines(), text.splitlines()[1:])
                      if a.startswith("|") and re.fullmatch(r"\|(:?-{3,}:?\|)+", b))
    assert pipe_tables >= 2  # the paired comparisons and the power section
    page = markdown_page(text)
    assert page.count("<table>") == pipe_tables
    assert "<title>Study &lt;b&gt; &amp; co: verdict</title>" in page
    assert "<h2>Study &lt;b&gt; &amp; co: verdict</h2>" in page and "<b> & co" not in page
    assert "<h3>Headline</h3>" in page and "<code>repa-mdlm compare</code>" in page
    assert "<li><b>0 of 2 REPA configurations beat the baseline</b>" in page
    assert "**" not in page and "|---" not in page  # no Markdown syntax left over
    # the numbers are the verdict's: a row of the paired table, aligned as its alignment row says
    assert "<td class='l'>ta</td><td class='r'>2</td><td class='r'>0.50</td>" in page
    assert "style>" in page and "border-collapse" in page  # Table 1's page style


def test_markdown_subset_escapes_text_and_keeps_structure():
    md = "\n".join([
        "# A < B & C", "", "First line with *italic* and **bold**,", "joined to the second `x < y`.", "",
        "- one <item>", "  continued", "- two", "", "| a \\| b | n |", "|:---:|---:|", "| <x> | **1** |",
        "| short |", "", "### Small", "Tail & end",
    ])
    body = markdown_html(md)
    assert body == (
        "<h2>A &lt; B &amp; C</h2>"
        "<p>First line with <i>italic</i> and <b>bold</b>, joined to the second <code>x &lt; y</code>.</p>"
        "<ul><li>one &lt;item&gt; continued</li><li>two</li></ul>"
        "<table><thead><tr><th class='c'>a | b</th><th class='r'>n</th></tr></thead><tbody>"
        "<tr><td class='c'>&lt;x&gt;</td><td class='r'><b>1</b></td></tr>"
        "<tr><td class='c'>short</td><td class='r'></td></tr></tbody></table>"
        "<h4>Small</h4><p>Tail &amp; end</p>")
    # a star that is arithmetic, not emphasis, stays a star; code is not emphasised
    assert markdown_html("a * b * c and `**raw**`") == "<p>a * b * c and <code>**raw**</code></p>"


def test_comparison_csv_pages_show_every_column():
    _, v = _verdict()
    page = frame_page("Paired <comparisons>", v.paired, ["note & more"])
    assert page.count("<tr>") == 1 + len(v.paired)
    for column in v.paired.columns:
        assert f"<th>{column}</th>" in page
    assert "<h3>Paired &lt;comparisons&gt;</h3>" in page and "<p>note &amp; more</p>" in page
    assert [cell_text(x) for x in (3, 2.0, 0.5, 92.33333, 1.5e-5, 123456.7, float("nan"), None, "a<b")] == \
        ["3", "2", "0.5", "92.33", "1.5e-05", "123456.7", "n/a", "n/a", "a<b"]


def test_report_pages_main_writes_one_page_per_source(tmp_path):
    text, v = _verdict()
    (tmp_path / "verdict.md").write_text(text)
    v.paired.to_csv(tmp_path / "paired.csv", index=False)
    (tmp_path / "empty.csv").write_text("\n")  # a table with no columns (compare writes one without teachers)
    written = report_pages_main([str(tmp_path / n) for n in ("verdict.md", "paired.csv", "empty.csv")],
                                str(tmp_path / "out"), ["ignored: the verdict has a heading", "paired", "empty"])
    assert [p.name for p in written] == ["verdict.html", "paired.html", "empty.html"]
    assert "<title>REPA study: verdict</title>" in written[0].read_text()
    assert "<h3>Paired</h3>" in written[1].read_text() and "<td>ta</td>" in written[1].read_text()
    with pytest.raises(ValueError, match="one per source"):
        report_pages_main([str(tmp_path / "verdict.md")], str(tmp_path), ["a", "b"])
    with pytest.raises(ValueError, match=r"\.md or \.csv"):
        report_pages_main([str(tmp_path / "runs.parquet")], str(tmp_path))


def test_every_comparison_page_has_a_source_compare_writes_and_a_caption():
    assert set(layout.COMPARISON_PAGES) <= set(COMPARISON_FILES)
    assert "verdict.md" in layout.COMPARISON_PAGES
    for name in layout.COMPARISON_PAGES:
        caption = REPO / "workflow" / "report" / f"{layout.file_stem(name)}.rst"
        assert caption.is_file() and len(caption.read_text()) > 200, caption
    assert layout.report_page("verdict.md") == "verdict.html"


def _report_data(report: str) -> tuple[dict, dict]:
    """The report's categories and results, as Snakemake embeds them in its single HTML file."""
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", report).group(1))
    results = json.loads(re.search(r"var results = (\{.*?\});\n", report).group(1))
    return categories, results


@pytest.mark.workflow
def test_the_report_shows_the_verdict_beside_table_1(tmp_path):
    """The comparison_pages rule on compare's files (here synthetic: no sweep is run), then
    `snakemake --report`: the verdict, paired, controls and power pages sit in Table 1's category."""
    results = tmp_path / "demo"
    tables = results / layout.TABLES
    tables.mkdir(parents=True)
    text, v = _verdict()
    (tables / "verdict.md").write_text(text)
    v.paired.to_csv(tables / "paired.csv", index=False)
    v.power.to_csv(tables / "power.csv", index=False)
    v.twin_table.to_csv(tables / "controls.csv", index=False)
    pages = [str(tables / layout.report_page(name)) for name in layout.COMPARISON_PAGES]
    run = ("--profile", "profiles/demo", "--config", f"results_dir={results}", "--nolock",
           "--allowed-rules", "comparison_pages")
    snakemake(*run, "--", *pages)  # "--": --allowed-rules takes every name after it
    report = tmp_path / "report.html"
    snakemake(*run, "--report", str(report), "--", *pages)
    categories, found = _report_data(report.read_text())
    in_table_1 = [p for group in categories["Table 1"].values() for p in group]
    assert set(pages) <= set(in_table_1)
    verdict = found[str(tables / "verdict.html")]
    assert verdict["labels"] == {"variant": layout.COMPARISON_PAGES["verdict.md"]}
    assert "verdict" in verdict["caption"]
    shown = base64.b64decode(verdict["data_uri"].split("base64,", 1)[1]).decode()
    assert shown.count("<table>") == 2 and "Headline" in shown
    paired = pd.read_csv(tables / "paired.csv")
    shown = base64.b64decode(found[pages[1]]["data_uri"].split("base64,", 1)[1]).decode()
    assert shown.count("<tr>") == 1 + len(paired)
