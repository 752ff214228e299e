#!/usr/bin/env bash
# Run by Snakemake (--sdm conda) inside the new env: install this repo's package so
# every rule can call `repa-mdlm`. Editable, so code changes need no env rebuild.
# The console script names repa_mdlm.workflow.cli:main since the package took layer folders (issue 26): this
# file changed with it, so Snakemake rebuilds an env made before, whose script named repa_mdlm.cli.
set -euo pipefail
pip install --no-deps --editable "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
