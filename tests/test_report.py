"""The report layer of the workflow: declared outputs match what the code writes, every caption
exists and renders, and regenerating figures or samples plans no training."""

from __future__ import annotations

import re

import pytest

from repa_mdlm.layout import PROVENANCE_FILES, TABLE_FILES, figure_stems

from .conftest import REPO
from .test_workflow import job_counts, snakemake

pytestmark = pytest.mark.workflow
REPORT_SMK = REPO / "workflow" / "rules" / "report.smk"
SNAKEMAKE_PLAN = REPO / "src" / "repa_mdlm" / "workflow" / "snakemake_plan.py"
DEMO_TEACHERS = ["minilm", "tiny-qwen3"]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # docutils' writer_name, as Snakemake calls it
def test_every_caption_exists_and_renders():
    import jinja2
    from docutils.core import publish_parts

    from repa_mdlm import layout

    # captions named in report.smk and the lists of its outputs (workflow, samples), and those layout.py
    # gives each table and figure: the rules read the latter from layout, so both sides are the same values
    captions = {name for source in (REPORT_SMK, SNAKEMAKE_PLAN)
                for name in re.findall(r'"\.\./report/([\w.-]+\.rst)"', source.read_text())}
    captions |= {f"{fig.caption}.rst" for fig in layout.figure_files(DEMO_TEACHERS)}
    captions |= {f"{stem}.rst" for stem in layout.TABLE_VARIANTS}
    assert {"workflow.rst", "table1.rst", "table1_amortized.rst", "fig2.rst", "heatmap.rst", "pareto.rst",
            "repa_loss.rst", "samples.rst", "sample_cell.rst"} <= captions
    fake = {"config": {"results_dir": "results", "seeds": [0]}, "wildcards": {"cell": "baseline_s0"}}
    for name in sorted(captions):
        path = REPO / "workflow" / "report" / name
        assert path.is_file(), f"caption {name} referenced in report.smk or snakemake_plan.py is missing"
        rst = jinja2.Template(path.read_text()).render(snakemake=fake)
        body = publish_parts(rst, writer_name="html", settings_overrides={"report_level": 2, "halt_level": 2})["body"]
        assert len(body) > 100, name


@pytest.fixture(scope="module")
def demo_plan(tmp_path_factory):
    results = tmp_path_factory.mktemp("demo")
    proc = snakemake("--profile", "profiles/demo", "--config", f"results_dir={results}", "-n", "--nolock")
    return results, proc.stdout + proc.stderr


def test_declared_outputs_match_what_the_code_writes(demo_plan):
    results, out = demo_plan
    for stem in figure_stems(DEMO_TEACHERS):
        for ext in ("png", "pdf"):
            assert f"{results}/figures/{stem}.{ext}" in out, f"{stem}.{ext} not declared"
    for name in TABLE_FILES + PROVENANCE_FILES:
        assert f"{results}/tables/{name}" in out, f"{name} not declared"
    assert f"{results}/samples/report_samples.html" in out
    counts = job_counts(out)
    assert counts["aggregate"] == counts["plot"] == counts["report_samples"] == 1
    # the amortised table reads the feature manifests (their wall_s)
    agg = out[out.index("rule aggregate:"):]
    agg = agg[:agg.index("\n\n")]
    assert f"{results}/teachers/minilm/features/train.json" in agg


def test_one_cell_samples_by_target(demo_plan):
    results, _ = demo_plan
    target = f"{results}/samples/minilm_L2_w0.50_s0.md"
    counts = job_counts(snakemake(target, "--profile", "profiles/demo", "--config", f"results_dir={results}", "-n",
                                  "--nolock", "--quiet", "rules").stdout)
    assert counts["sample"] == 1 and counts["train"] == 1  # that cell only (and what it needs)
    assert counts.get("report_samples", 0) == 0


def test_lint_is_clean_with_report_rules():
    proc = snakemake("--lint")
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- the verdict beside Table 1 (issue 19)
# (tests/test_verdict_report.py builds a report with these pages and checks the Markdown rendering)


def test_default_target_plans_the_verdict_pages(demo_plan):
    from repa_mdlm.layout import COMPARISON_PAGES, report_page

    results, out = demo_plan
    for name in COMPARISON_PAGES:
        assert f"{results}/tables/{report_page(name)}" in out, f"{report_page(name)} not planned"
    assert job_counts(out)["comparison_pages"] == 1
    job = out[out.index("rule comparison_pages:"):]
    job = job[:job.index("\n\n")]
    assert f"{results}/tables/verdict.md" in job  # compare's Markdown, not a second verdict
