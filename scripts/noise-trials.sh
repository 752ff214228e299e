#!/usr/bin/env bash
# The baseline-only noise trials behind config/study.yaml's schedule (docs/study.md): each arm of
# config/noise-trials/ trains the baseline on tuning seeds 100-103, two jobs at a time, then
# the table below gives the between-seed spread. No REPA cell is trained.
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate
arms=("$@")
[ ${#arms[@]} -gt 0 ] || arms=(control init-0.05 lr-2e-3)
targets=()
for arm in "${arms[@]}"; do
  for seed in 100 101 102 103; do
    targets+=("results/noise-trials/$arm/runs/baseline_s$seed/train_summary.json")
  done
done
for arm in "${arms[@]}"; do
  snakemake --profile profiles/study --configfile config/study.yaml "config/noise-trials/$arm.yaml" \
    --cores 2 $(printf '%s\n' "${targets[@]}" | grep "/$arm/")
done
python - "${arms[@]}" <<'PY'
import sys
import numpy as np
from repa_mdlm.analysis.runs import read_val_curve

ESCAPE = 400.0  # val PPL below this: off the unigram plateau (unigram PPL of the split ~ 495)
print("| arm | seeds | escape step (val PPL < 400), per seed | val PPL at the last step, per seed | mean | SD |")
print("|---|---:|---|---|---:|---:|")
for arm in sys.argv[1:]:
    escapes, finals = [], []
    for seed in (100, 101, 102, 103):
        curve = read_val_curve(f"results/noise-trials/{arm}/runs/baseline_s{seed}/train_log.jsonl")
        below = curve[curve["val_ppl"] < ESCAPE]
        escapes.append("never" if below.empty else str(int(below["step"].iloc[0])))
        finals.append(float(curve["val_ppl"].iloc[-1]))
    print(f"| {arm} | 4 | {' / '.join(escapes)} | {' / '.join(f'{v:.1f}' for v in finals)} | "
          f"{np.mean(finals):.1f} | {np.std(finals, ddof=1):.1f} |")
PY
