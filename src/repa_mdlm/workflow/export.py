"""`repa-mdlm export`: one trained cell as a folder anyone can load, away from the results folder.

The folder holds the model files (config.json with is_causal = false and mask_token_id, the weights),
the student tokenizer with its mask token, the cell's config.yaml, train_summary.json and metrics.json,
and a model card (README.md): what the model is, how it was trained, its data, metrics with intervals,
provenance, and how to load, sample and push it. `AutoModelForCausalLM.from_pretrained(folder)` and
`AutoTokenizer.from_pretrained(folder)` then work from the folder alone, with `repa_mdlm.evaluation.sampler.generate`.
Nothing here reaches a hub: the card says how to push it (`hf upload`), the user runs it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..io import DataError, atomic_write_text, read_json_object
from ..layout import DATA, METRICS, MODEL, MODEL_CARD, PROVENANCE, RUN_CONFIG, TOKENIZER, TRAIN_SUMMARY
from ..training.checkpoint import verified_summary


def _read_optional(path: Path, what: str, rule: str) -> dict[str, Any]:
    return read_json_object(path, what, rule=rule) if path.exists() else {}


def _config(run_dir: Path) -> dict[str, Any]:
    import yaml

    path = run_dir / RUN_CONFIG
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def default_data_dir(run_dir: Path) -> Path:
    """The sweep's data folder: results_dir/data beside results_dir/runs/<cell>."""
    return run_dir.resolve().parent.parent / DATA


def _fmt(value, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def _what(cell: str, cfg: dict) -> list[str]:
    student, repa = cfg.get("student", {}), cfg.get("repa", {})
    if cell.startswith("baseline"):
        recipe = "the baseline: the masked-diffusion objective alone, no representation alignment"
    else:
        recipe = (f"masked diffusion with REPA: a hidden layer of the student aligned to a frozen teacher's "
                  f"features (cell `{cell}`: teacher, layer, weight λ and seed in its name; alignment loss "
                  f"`{repa.get('loss', 'n/a')}`, {repa.get('alignment', 'pooled')} alignment, "
                  f"{repa.get('projector', 'linear')} projector, λ {repa.get('weight_schedule', 'constant')})")
    return [f"# {cell}: a masked diffusion language model (MDLM)", "",
            f"A bidirectional Qwen2-architecture student ({student.get('num_hidden_layers', '?')} layers, hidden "
            f"size {student.get('hidden_size', '?')}) trained as a masked diffusion LM (MDLM, log-linear "
            f"schedule, SUBS parameterisation) with the `repa-mdlm` workflow; {recipe}.", "",
            "It is **not** an autoregressive model: `generate()` of transformers does not apply. Text comes "
            "from the MDLM ancestral sampler (below), which unmasks an all-mask sequence step by step.", ""]


def _training(summary: dict, cfg: dict) -> list[str]:
    train, corpus, tok = cfg.get("train", {}), cfg.get("corpus", {}), cfg.get("tokenizer", {})
    source = corpus.get("source", "n/a")
    tokenizer = tok.get("name_or_path") or f"a byte-level BPE of {tok.get('train_vocab_size')} tokens trained on it"
    where = (f"`{corpus.get('name')}`" + (f" ({corpus.get('subset')})" if corpus.get("subset") else "")
             + f", revision `{corpus.get('revision')}`" if source == "huggingface" else
             ", ".join(f"`{p}`" for p in corpus.get("paths", [])) or source)
    return ["## Training", "",
            f"- steps: {summary.get('steps', train.get('steps', 'n/a'))}, global batch "
            f"{train.get('global_batch', 'n/a')} x {cfg.get('seq_len', 'n/a')} tokens, optimizer "
            f"{summary.get('optimizer', train.get('optimizer', 'n/a'))}, peak learning rate {train.get('lr', 'n/a')}",
            f"- {summary.get('tokens', 'n/a')} training tokens in {_fmt(summary.get('train_wall_s'), 0)} s "
            f"({_fmt(summary.get('tokens_per_s'), 0)} tokens/s) on {summary.get('device', 'n/a')} "
            f"x {summary.get('world_size', 1)}",
            f"- data: {source} corpus {where}; tokenizer {tokenizer} (revision {tok.get('revision')}), with the "
            f"mask token `{tok.get('mask_token', '<|mask|>')}`", "",
            "The whole resolved config of the cell is `config.yaml` in this folder.", ""]


def _metrics(metrics: dict) -> list[str]:
    if not metrics:
        return ["## Metrics", "", "Not evaluated when exported (no metrics.json).", ""]
    lo, hi = (metrics.get("test_ppl_ci95") or [None, None])[:2]
    lines = ["## Metrics", "", "| metric | value |", "|---|---|",
             f"| test ELBO perplexity | {_fmt(metrics.get('test_ppl'))} (95 % interval [{_fmt(lo)}, {_fmt(hi)}]) |",
             f"| test N-ELBO (nats/token) | {_fmt(metrics.get('test_nelbo'), 4)} ± "
             f"{_fmt(metrics.get('test_nelbo_se'), 4)} (standard error) |",
             f"| test tokens, t draws | {metrics.get('test_tokens', 'n/a')}, {metrics.get('t_draws', 'n/a')} |"]
    return lines + ["", "The perplexity is exp(N-ELBO): in expectation an upper bound on the model's true "
                        "perplexity. The value here is a Monte Carlo estimate of it (stratified diffusion times per "
                        "test sequence); its standard error and interval are estimates, not bounds. All numbers: "
                        "`metrics.json`.", ""]


def _provenance(summary: dict) -> list[str]:
    p = summary.get(PROVENANCE)
    if not p:
        return ["## Provenance", "", "Not recorded (trained before provenance was recorded).", ""]
    v = p.get("versions") or {}
    return ["## Provenance", "",
            f"- code: commit `{p.get('commit')}`" + (" (with uncommitted changes)" if p.get("dirty") else ""),
            "- " + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None),
            f"- GPU: {p.get('gpu') or 'none (CPU)'}" + (f", driver {p['driver']}" if p.get("driver") else "")
            + f"; host {p.get('host')}" + (f"; Slurm {p['slurm']}" if p.get("slurm") else ""),
            f"- config sha256 `{p.get('config_sha256')}`; hub inputs: " + (", ".join(
                f"{k} `{r.get('name')}`@{r.get('revision') or 'default branch'}"
                for k, r in (p.get("hub_revisions") or {}).items()) or "none"), ""]


def _usage(cell: str, seq_len, projection: bool) -> list[str]:
    return ["## Load and sample", "", "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "from repa_mdlm.evaluation.sampler import generate  # the repa-mdlm package (pip install <its source folder>)",
            "", 'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")  # bidirectional: config.is_causal = False',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")      # with its mask token',
            f"texts = generate(model, tokenizer, n_samples=4, seq_len={seq_len}, steps=128, seed=0)",
            "```", "",
            "`repa_mdlm.model.student.load_student(folder)` loads it too, checking that it is a diffusion student."
            + (" `repa_projection.safetensors` is the REPA projection head, used in training only." if projection
               else ""), "",
            "## Push to a hub", "", "Nothing in the workflow uploads; when you want to:", "", "```bash",
            # a hub repository's name has no "+" (another arm's cells are named teacher+tag)
            "hf auth login", f"hf upload <user>/{cell.replace('+', '-')} path/to/this/folder .", "```", ""]


def model_card(cell: str, cfg: dict, summary: dict, metrics: dict, projection: bool = False) -> str:
    import yaml

    front = ["---", "library_name: transformers", "pipeline_tag: fill-mask",
             "tags: [masked-diffusion, mdlm, repa, repa-mdlm]", "---", ""]
    return "\n".join(front + _what(cell, cfg) + _training(summary, cfg) + _metrics(metrics) + _provenance(summary)
                     + _usage(cell, cfg.get("seq_len", 128), projection) + ["## Config", "", "```yaml",
                                                               yaml.safe_dump(cfg, sort_keys=False).rstrip(),
                                                               "```", ""])


def export_cell(run_dir: str | os.PathLike, out_dir: str | os.PathLike,
                data_dir: str | os.PathLike | None = None) -> Path:
    """Write the cell's loadable folder at `out_dir` (which must be new or empty); returns it."""
    from ..data.dataset import load_tokenizer

    run_dir, out = Path(run_dir), Path(out_dir)
    summary_path = run_dir / TRAIN_SUMMARY
    if not (run_dir / MODEL).is_dir() or not summary_path.exists():
        raise DataError(f"{run_dir}: no trained model (model/ and {TRAIN_SUMMARY}); train the cell first")
    summary = verified_summary(run_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; export into a new folder")
    tokenizer = load_tokenizer(Path(data_dir or default_data_dir(run_dir)) / TOKENIZER)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(run_dir / MODEL, tmp)
        tokenizer.save_pretrained(tmp)
        for name in (RUN_CONFIG, TRAIN_SUMMARY, METRICS):
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, tmp / name)
        cfg = _config(run_dir)
        metrics = _read_optional(run_dir / METRICS, "metrics", "evaluate")
        atomic_write_text(tmp / MODEL_CARD, model_card(str(cfg.pop("cell", run_dir.name)), cfg, summary, metrics,
                                                             (tmp / "repa_projection.safetensors").exists()))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
