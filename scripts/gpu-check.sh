#!/usr/bin/env bash
# The prepared check for a lent GPU: environment, device sanity at paper shapes, `pytest -m gpu`,
# a short paper-size benchmark, and a paper-sized baseline cell through `repa-mdlm train` and
# `evaluate`. Each stage has its own time limit (7 min 50 s in all), a failing stage does not stop
# the next, and it always ends with a summary. Results: $OUT (on the lent machine) or --out DIR.
#
#   scripts/gpu-check.sh                  # on the GPU machine (see docs/benchmarks.md)
#   scripts/gpu-check.sh --smoke          # the same stages on a CPU at demo size (CI runs this)
#
# Packages the GPU machine lacks (bitsandbytes, jsonschema) come from .carry/site, built here by
# scripts/gpu-carry.sh and sent with `carry: [".carry"]`. Exit status: 0 when every stage passed.
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=0
out=${OUT:-results/gpu-check}
while (($#)); do
  case $1 in
    --smoke) smoke=1 ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--smoke] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-python3}
# the carried set is built for the GPU machine's CPython 3.12 (rpds is a compiled extension)
if [[ -d .carry/site ]] && "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  export PYTHONPATH="$PWD/.carry/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
unset BNB_CUDA_VERSION  # it would override bitsandbytes' choice of library for torch's CUDA
# gigabytes at paper size: never under $OUT; new, empty, or one an earlier check made (it is refused otherwise)
work=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/repa-mdlm-gpu-check}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log=$out/stages.log
: >"$log"
printf 'stage\trc\tseconds\tlimit\n' >"$out/stages.tsv"
rm -f "$out"/{env,sanity,cell}.json "$out/benchmark.md" "$out/summary.md"

# stage NAME LIMIT_S COMMAND...: run under `timeout`, output to the terminal and stages.log
stage() {
  local name=$1 limit=$2 began rc
  shift 2
  echo "=== $name (limit ${limit} s) ===" | tee -a "$log"
  began=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((($(date +%s%N) - began) / 1000000000))" "$limit" >>"$out/stages.tsv"
  echo "=== $name: exit $rc ===" | tee -a "$log"
}

if ((smoke)); then
  size=(--size demo --steps 1 --warmup 0)
  teachers=(--teachers tiny-bert --teacher-batch-sizes 16 64)
  flag=(--smoke)
  limits=(60 120 120 300 300 300)
else
  size=(--size paper --steps 4 --warmup 2)
  teachers=(--teachers qwen3-1.7b --cache-only bertimbau --teacher-batch-sizes 32 128 256)
  flag=()
  limits=(40 45 55 75 140 120)  # 7 min 55 s; the lent call's timeout_s: 600 (docs/benchmarks.md)
fi
skip=(--skip read-ahead heads eager-attention checkpointing online drift)

stage env "${limits[0]}" "$PY" -m repa_mdlm.bench.gpu_check env --out "$out" "${flag[@]}"
stage sanity "${limits[1]}" "$PY" -m repa_mdlm.bench.gpu_check sanity --out "$out" "${flag[@]}"
# the training tests' fixtures fall back to a synthetic corpus and a random teacher where the
# demo packages are missing; the slow compile test is left to the benchmark's compile rows
stage pytest-gpu "${limits[2]}" "$PY" -m pytest -m "gpu and not slow" -q -rs -p no:cacheprovider tests/test_gpu.py
stage benchmark "${limits[3]}" "$PY" -m repa_mdlm benchmark "${size[@]}" "${teachers[@]}" "${skip[@]}" \
  --append "$out/benchmark.md"
# cold compiles in a stage of their own, per block first (short), then the whole backbone (the
# longest): each row is printed when measured, so a time-out loses only what it cut
stage benchmark-compile "${limits[4]}" "$PY" -m repa_mdlm benchmark "${size[@]}" --compile-only \
  --compile blocks backbone --append "$out/benchmark.md"
stage cell "${limits[5]}" "$PY" -m repa_mdlm.bench.gpu_check cell --out "$out" --work "$work" "${flag[@]}"
# only what the cell stage made and marked as its own: a folder holding anything else is left as it is
"$PY" -m repa_mdlm.bench.gpu_check clean --out "$out" --work "$work"

"$PY" -m repa_mdlm.bench.gpu_check summary --out "$out"
! cut -f2 "$out/stages.tsv" | tail -n +2 | grep -qv '^0$'
