"""The samples in the report: a cell's samples as a page (`repa-mdlm sample`), and the baseline's beside the
best REPA cell's (`repa-mdlm report-samples`), drawn by evaluation/sampler.py."""

from __future__ import annotations

import html
from pathlib import Path

from ..config.sampling import SAMPLING
from ..evaluation.sampler import sample_run
from ..io import atomic_write_text


def _describe(r: dict, role: str | None = None) -> str:
    m, st = r["metrics"], r["stats"]
    ppl = f"test ELBO PPL {m['test_ppl']:.2f}" if m.get("test_ppl") is not None else "not evaluated"
    head = f"{role}: " if role else ""
    return (f"{head}{r['cell']} ({ppl}); {st.n_samples} samples of {st.seq_len} tokens, {st.steps} steps, "
            f"seed {st.seed}, {st.network_calls} network calls (cached p(x0) reused on the other steps)")


def samples_markdown(results: list[tuple[str | None, dict]], title: str) -> str:
    lines = [f"# {title}", "",
             "MDLM ancestral sampling from all-mask (log-linear schedule, t from 1 to 0); "
             "a blank line marks an end-of-text token.", ""]
    for role, r in results:
        lines += [f"## {_describe(r, role)}", ""]
        for i, text in enumerate(r["texts"], 1):
            lines += [f"**Sample {i}**", "", "```text", text, "```", ""]
    return "\n".join(lines)


def samples_html(results: list[tuple[str | None, dict]], title: str) -> str:
    esc = html.escape
    parts = [f"<h3>{esc(title)}</h3><p>MDLM ancestral sampling from all-mask (log-linear schedule, t from 1 to 0); "
             "a blank line marks an end-of-text token.</p>"]
    for role, r in results:
        parts.append(f"<h4>{esc(_describe(r, role))}</h4>")
        parts += [f"<p><b>Sample {i}</b></p><pre>{esc(text)}</pre>" for i, text in enumerate(r["texts"], 1)]
    style = ("body{font-family:sans-serif;font-size:14px;margin:1em}pre{white-space:pre-wrap;background:#f6f6f6;"
             "padding:8px;max-width:60em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


def write_samples(run_dir, data_dir, out_path, n_samples: int = SAMPLING.n_samples, steps: int = SAMPLING.steps,
                  seed: int = SAMPLING.seed, seq_len: int | None = None) -> Path:
    """Sample one cell and write a markdown file (``repa-mdlm sample``)."""
    r = sample_run(run_dir, data_dir, n_samples, steps, seed, seq_len)
    return atomic_write_text(out_path, samples_markdown([(None, r)], f"Samples of {r['cell']}"))


def write_report_samples(metrics: list[str], data_dir, out_md, out_html, n_samples: int = SAMPLING.n_samples,
                         steps: int = SAMPLING.steps, seed: int = SAMPLING.seed) -> list[Path]:
    """Sample the best REPA cell (lowest test PPL averaged over seeds) and the baseline, picked from
    the cells' metrics.json, into one markdown and one HTML file (``repa-mdlm report-samples``)."""
    from ..analysis.runs import baseline_cell, best_repa_config, collect_runs

    runs = collect_runs(metrics)
    run_dirs = {Path(p).parent.name: Path(p).parent for p in metrics}
    picks = []
    best = best_repa_config(runs)
    if best is not None:
        picks.append((f"Best REPA cell ({best['teacher']}, layer {best['layer']}, λ = {best['weight']:.2f})",
                      best["cell"]))
    base = baseline_cell(runs)
    if base is not None:
        picks.append(("Baseline (no REPA)", base))
    results = [(role, sample_run(run_dirs[cell], data_dir, n_samples, steps, seed)) for role, cell in picks]
    title = "Samples: best REPA cell vs baseline"
    return [atomic_write_text(out_md, samples_markdown(results, title)),
            atomic_write_text(out_html, samples_html(results, title))]
