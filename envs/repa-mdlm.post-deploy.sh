#!/usr/bin/env bash
# Run by Snakemake (--sdm conda) inside the new env: install this repo's package so
# every rule can call `repa-mdlm`. Editable, so code changes need no env rebuild.
set -euo pipefail
pip install --no-deps --editable "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
