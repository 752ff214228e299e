#!/usr/bin/env bash
# CI, after the normal tests: start a real single-node Slurm on this machine, run the Slurm tests
# (tests/test_slurm.py: the demo sweep through `--profile slurm`, GPU requests, preemption and
# resume), stop the cluster. Exits non-zero if the cluster does not start or a test fails.
# Needs root and apt (scripts/local-slurm.sh installs Slurm, munge and MariaDB) and the .venv
# that `make setup` builds.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

scripts/local-slurm.sh start
trap 'scripts/local-slurm.sh stop' EXIT

source .venv/bin/activate
# the tests skip themselves when no cluster answers; here a skip is a failure
python -c 'import sys; from tests.test_slurm import _WHY_NOT; sys.exit(f"Slurm cluster not usable: {_WHY_NOT}" if _WHY_NOT else 0)'
pytest -m slurm -ra -p no:cacheprovider tests/test_slurm.py "$@"
