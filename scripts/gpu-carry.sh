#!/usr/bin/env bash
# Builds the Python packages the borrowed GPU machine lacks into OUT_DIR/site (default .carry/site),
# then checks them with scripts/check_carry.py. That machine (CPython 3.12, glibc 2.39, x86_64,
# torch cu130) has no network, so the set travels with the work tree (`carry: [".carry"]`) and is
# used there via PYTHONPATH; tree plus carry must stay under 64 MiB.
# Usage: scripts/gpu-carry.sh [OUT_DIR]     Needs python3 with pip and PyPI access.
set -euo pipefail

# Pins. bitsandbytes: the version `make setup` installs into .venv, so both machines run the same
# code. The jsonschema family: also as in .venv, and mutually compatible (jsonschema needs
# jsonschema-specifications, referencing, rpds-py; check_carry.py checks their Requires-Dist).
BNB_VERSION=${BNB_VERSION:-0.50.2}
JSONSCHEMA_VERSION=${JSONSCHEMA_VERSION:-4.26.0}
JSONSCHEMA_SPECIFICATIONS_VERSION=${JSONSCHEMA_SPECIFICATIONS_VERSION:-2025.9.1}
REFERENCING_VERSION=${REFERENCING_VERSION:-0.37.0}
RPDS_PY_VERSION=${RPDS_PY_VERSION:-2026.9.1}
# torch cu130 reports CUDA 13.0, and bitsandbytes loads libbitsandbytes_cuda130.so for it
export BNB_CUDA=${BNB_CUDA:-130}

repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$repo/.carry}")
site=$out/site
dl=$(mktemp -d)
trap 'rm -rf "$dl"' EXIT

# The device's wheel tags, whatever this machine is: pip matches --platform tags literally.
platforms=()
for n in $(seq 39 -1 17); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)

python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$dl" \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none "${platforms[@]}" \
  "bitsandbytes==$BNB_VERSION" "jsonschema==$JSONSCHEMA_VERSION" \
  "jsonschema-specifications==$JSONSCHEMA_SPECIFICATIONS_VERSION" \
  "referencing==$REFERENCING_VERSION" "rpds-py==$RPDS_PY_VERSION"

rm -rf "$site"
mkdir -p "$site"
(cd "$dl" && ls -1 -- *.whl) > "$out/wheels.txt"
for whl in "$dl"/*.whl; do
  # none of these wheels has install scripts, so unpacking is installing
  python3 -m zipfile -e "$whl" "$site"
done
for data in "$site"/*.data; do
  [[ -d $data ]] || continue
  for lib in purelib platlib; do
    if [[ -d $data/$lib ]]; then cp -a "$data/$lib/." "$site/"; fi
  done
  others=$(find "$data" -mindepth 1 -maxdepth 1 ! -name purelib ! -name platlib -printf '%f ')
  [[ -z $others ]] || echo "note: dropped $(basename "$data")/{$others} (not needed to import)" >&2
  rm -rf "$data"
done

# One native library per CUDA/ROCm/XPU version ships in the wheel (about 150 MB); torch cu130
# needs only cuda$BNB_CUDA, and the CPU one lets `import bitsandbytes` load on a machine without a GPU.
echo "bitsandbytes native libraries in the wheel (bytes):"
find "$site/bitsandbytes" -maxdepth 1 -name 'libbitsandbytes_*' -printf '  %f %s\n' | sort
find "$site/bitsandbytes" -maxdepth 1 -name 'libbitsandbytes_*' \
  ! -name "libbitsandbytes_cuda$BNB_CUDA.so" ! -name libbitsandbytes_cpu.so -delete
find "$site" -name __pycache__ -type d -prune -exec rm -rf {} +

python3 "$repo/scripts/check_carry.py" "$out"
