"""The per-cell metrics beyond test PPL, read into frames: each cell's generative.json (gen. PPL, entropy) and
its results on the zero-shot sets. The paired families (paired.py) and the tables beside Table 1
(reporting/generative_report.py, reporting/zero_shot_report.py) both start here."""

from __future__ import annotations

import pandas as pd

from ..io import read_json_object

COLUMNS = ["cell", "teacher", "layer", "weight", "seed", "gen_ppl", "gen_ppl_se", "entropy", "entropy_se",
           "data_gen_ppl", "data_entropy", "network_calls_per_sample", "sampler_s_per_sample", "samples", "steps",
           "seq_len", "judge", "judge_trained_on_train_split", "flags"]


def collect_generative(paths: list[str], runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell from its generative.json (checksummed when written), with its test ELBO PPL
    from the runs table when given."""
    rows = []
    for path in paths:
        g = read_json_object(path, "generative evaluation", rule="generative")
        rows.append({key: ("; ".join(g[key]) if key == "flags" else g.get(key)) for key in COLUMNS})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if runs is not None:
        frame = frame.merge(runs[["cell", "test_ppl"]], on="cell", how="left")
    return frame.sort_values(["teacher", "layer", "weight", "seed"], na_position="first", kind="stable")


def collect_zero_shot(paths: list[str]) -> pd.DataFrame:
    rows = [read_json_object(p, "zero-shot evaluation", rule="zero_shot") for p in paths]
    keep = ["cell", "teacher", "layer", "weight", "seed", "test_set", "test_ppl", "test_nelbo", "test_nelbo_se"]
    return pd.DataFrame([{k: r.get(k) for k in keep} for r in rows], columns=keep)
