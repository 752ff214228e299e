#!/usr/bin/env python3
"""Check a carried package set built by scripts/gpu-carry.sh before it travels to the GPU machine.

Usage: check_carry.py OUT_DIR

The GPU machine has CPython 3.12, glibc 2.39, x86_64 and torch cu130, and no network: what it lacks
comes as OUT_DIR/site on its PYTHONPATH. Exits non-zero, naming each failure, when the set would not
work there or, with the work tree, is 64 MiB or more. Runs here (imports are checked under whichever
local interpreters can do each part, and it says which could not be) and on the GPU machine itself,
where it also loads the CUDA library and steps an 8-bit optimizer.

Environment: BNB_CUDA (default 130), CARRY_CHECK_PYTHONS (interpreters to try, space-separated).
"""

from __future__ import annotations

import email.parser
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from packaging import tags
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # a bare interpreter: pip vendors the same module
    from pip._vendor.packaging import tags
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
BNB_CUDA = os.environ.get("BNB_CUDA", "130")
DEVICE_GLIBC = 39  # Ubuntu 24.04
LIMIT = 64 * 2**20
# What the GPU machine has besides the carry (typing-extensions: torch requires it)
DEVICE_HAS = {"torch", "numpy", "packaging", "attrs", "typing-extensions", "transformers", "safetensors",
              "tokenizers", "pyyaml", "tqdm", "pandas", "pyarrow", "scipy", "pytest"}
DEVICE_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
                  "platform_python_implementation": "CPython", "sys_platform": "linux", "os_name": "posix",
                  "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}

failures: list[str] = []
skipped: list[str] = []


def check(ok: bool, what: str, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {what}" + (f": {detail}" if detail else ""))
    if not ok:
        failures.append(what)
    return ok


def skip(what: str, why: str) -> None:
    print(f"SKIP  {what}: {why}")
    skipped.append(what)


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def device_tags() -> set[tags.Tag]:
    plats = [f"manylinux_2_{n}_x86_64" for n in range(DEVICE_GLIBC, 4, -1)]
    plats += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    return set(tags.cpython_tags((3, 12), abis=["cp312"], platforms=plats)) | set(
        tags.compatible_tags((3, 12), interpreter="cp312", platforms=plats))


def check_wheels(out: Path, site: Path) -> dict[str, Version]:
    listed = out / "wheels.txt"
    names = listed.read_text().split() if listed.is_file() else []
    if not check(bool(names), "wheel list", str(listed)):
        return {}
    ok_tags = device_tags()
    versions = {}
    for name in names:
        dist, version, _, wheel_tags = parse_wheel_filename(name)
        versions[dist] = version
        fits = sorted(str(t) for t in wheel_tags & ok_tags)
        check(bool(fits), f"wheel tags fit cp312 manylinux x86_64 glibc<=2.{DEVICE_GLIBC}: {name}",
              fits[0] if fits else "no tag matches")
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        check(info.is_dir(), f"{info.name} unpacked")
    return versions


def check_requirements(site: Path, carried: dict[str, Version]) -> None:
    """Each carried distribution's Requires-Dist is met by the carry or by the GPU machine."""
    for info in sorted(site.glob("*.dist-info")):
        meta = email.parser.Parser().parsestr((info / "METADATA").read_text())
        for line in meta.get_all("Requires-Dist") or []:
            req = Requirement(line)
            if req.marker and not req.marker.evaluate(DEVICE_MARKERS):
                continue
            name = canonicalize_name(req.name)
            what = f"{meta['Name']} {meta['Version']} requires {req}"
            if name in carried:
                check(req.specifier.contains(carried[name], prereleases=True), what, f"carried {carried[name]}")
            else:
                check(name in DEVICE_HAS, what, "on the GPU machine" if name in DEVICE_HAS else "missing there")


def check_bnb_libs(site: Path) -> None:
    libs = sorted((site / "bitsandbytes").glob("libbitsandbytes_*"))
    for lib in libs:
        print(f"      {lib.name}  {mib(lib.stat().st_size)}")
    want = f"libbitsandbytes_cuda{BNB_CUDA}.so"
    check(any(p.name == want for p in libs), f"bitsandbytes CUDA {BNB_CUDA[:-1]}.{BNB_CUDA[-1]} library present",
          want)
    extra = [p.name for p in libs if p.name not in (want, "libbitsandbytes_cpu.so")]
    check(not extra, "no other CUDA/ROCm/XPU bitsandbytes library", ", ".join(extra))


def check_shared_objects(site: Path) -> None:
    for so in sorted(site.rglob("*.so")):
        head = so.read_bytes()[:20]
        machine = int.from_bytes(head[18:20], "little")
        rel = so.relative_to(site)
        check(head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1 and machine == 62,
              f"x86-64 ELF: {rel}", f"e_machine {machine}")
        # an extension module's name says which CPython it was built for; plain ctypes libraries have no tag
        tag = re.search(r"\.(cpython-[^.]+|abi3)\.so$", so.name)
        if tag:
            check(tag.group(1) in ("cpython-312-x86_64-linux-gnu", "abi3"), f"extension module for cp312: {rel}",
                  tag.group(1))


def probe(python: str) -> dict | None:
    code = ("import sys, json, importlib.util as u; print(json.dumps({'version': sys.version_info[:2], "
            "'prefix': sys.prefix, 'has': [m for m in ('torch', 'attr', 'attrs', 'typing_extensions') "
            "if u.find_spec(m)]}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        run = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        return {"python": python, **json.loads(run.stdout)} if run.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def interpreters() -> list[dict]:
    if os.environ.get("CARRY_CHECK_PYTHONS"):
        names = os.environ["CARRY_CHECK_PYTHONS"].split()
    else:
        pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        names = [sys.executable, str(REPO / ".venv/bin/python"), "python3.12", "/usr/bin/python3.12",
                 *sorted(glob.glob(f"{pyenv}/versions/3.12*/bin/python3.12"))]
    found, seen = [], set()
    for name in names:
        path = shutil.which(name)
        info = probe(path) if path else None
        if info and info["prefix"] not in seen:
            seen.add(info["prefix"])
            found.append(info)
    return found


JSONSCHEMA_CODE = r"""
import os, sys
from importlib.metadata import version
site = os.path.realpath(sys.argv[1])
import jsonschema, jsonschema_specifications, referencing, rpds
for m in (jsonschema, jsonschema_specifications, referencing, rpds):
    assert os.path.realpath(m.__file__).startswith(site + os.sep), f"{m.__name__} from {m.__file__}, not the carry"
schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
          "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}
jsonschema.validators.validator_for(schema).check_schema(schema)  # the metaschema comes from jsonschema_specifications
jsonschema.validate({"n": 3}, schema)
try:
    jsonschema.validate({"n": 0}, schema)
    raise SystemExit("an invalid instance validated")
except jsonschema.ValidationError:
    pass
print(", ".join(f"{d} {version(d)}" for d in ("jsonschema", "jsonschema-specifications", "referencing", "rpds-py")))
"""

BNB_CODE = r"""
import os, sys
site, cuda = os.path.realpath(sys.argv[1]), sys.argv[2]
import torch, bitsandbytes as bnb
from bitsandbytes import cextension
from bitsandbytes.cuda_specs import CUDASpecs
assert os.path.realpath(bnb.__file__).startswith(site + os.sep), f"bitsandbytes from {bnb.__file__}, not the carry"
assert hasattr(bnb.optim, "AdamW8bit"), "no bitsandbytes.optim.AdamW8bit"
# the library bitsandbytes picks for a torch built with CUDA 13.0, among the carried files
spec = CUDASpecs((9, 0), cuda_version_string="130", cuda_version_tuple=(13, 0))
picked = cextension.get_cuda_bnb_library_path(spec)
assert picked.name == f"libbitsandbytes_cuda{cuda}.so" and picked.exists(), f"torch cu130 would get {picked}"
loaded = getattr(getattr(cextension.lib, "_lib", None), "_name", None)
print(f"bitsandbytes {bnb.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda}); "
      f"for CUDA 13.0 picks {picked.name}; loaded here: {loaded and os.path.basename(loaded)}")
if torch.cuda.is_available():
    assert loaded and loaded.endswith(f"libbitsandbytes_cuda{cuda}.so"), f"loaded {loaded}"
    p = torch.nn.Parameter(torch.randn(8192, device="cuda"))
    opt = bnb.optim.AdamW8bit([p])
    p.square().sum().backward()
    before = p.detach().clone()
    opt.step()
    torch.cuda.synchronize()
    assert opt.state[p]["state1"].dtype == torch.uint8 and not torch.equal(before, p), "8-bit step did nothing"
    print("AdamW8bit step on", torch.cuda.get_device_name())
else:
    assert loaded and loaded.endswith("libbitsandbytes_cpu.so"), f"loaded {loaded}"
"""


def run_snippet(what: str, py: dict, code: str, paths: list[str], *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BNB_CUDA_VERSION"}  # it would override the choice
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    run = subprocess.run([py["python"], "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    where = f"Python {'.'.join(map(str, py['version']))} ({py['python']})"
    lines = (run.stdout.strip() or run.stderr.strip()).splitlines() or ["no output"]
    check(run.returncode == 0, f"{what} under {where}", lines[-1])


def check_imports(site: Path) -> None:
    pys = interpreters()
    for py in pys:
        print(f"      found Python {'.'.join(map(str, py['version']))} at {py['python']}: has {', '.join(py['has'])}")
    # rpds is a cp312 extension, so the jsonschema family only imports under 3.12; its pure-Python
    # dependencies (attrs, typing_extensions, on the GPU machine already) may come from another interpreter
    py312 = [p for p in pys if p["version"] == [3, 12]]
    if not py312:
        skip("jsonschema family import", "no CPython 3.12 here (rpds is a cp312 extension)")
    else:
        py = max(py312, key=lambda p: len(p["has"]))
        need = {"attr", "attrs", "typing_extensions"} - set(py["has"])
        donor = next((p for p in pys if need <= set(p["has"])), None)
        with tempfile.TemporaryDirectory() as shim:
            if need and donor:
                code = "import sys, importlib; print(*(importlib.import_module(m).__file__ for m in sys.argv[1:]))"
                run = subprocess.run([donor["python"], "-c", code, *sorted(need)], capture_output=True, text=True)
                for f in map(Path, run.stdout.split()):
                    src = f.parent if f.name == "__init__.py" else f
                    os.symlink(src, Path(shim) / src.name)
                print(f"      {', '.join(sorted(need))} for that check from {donor['python']}")
            run_snippet("jsonschema validates with the carried jsonschema, referencing, rpds", py,
                        JSONSCHEMA_CODE, [str(site), shim], str(site))
    with_torch = [p for p in pys if "torch" in p["has"]]
    if not with_torch:
        skip("bitsandbytes import", "no interpreter with torch here")
    else:
        py = max(with_torch, key=lambda p: p["version"] == [3, 12])
        run_snippet("bitsandbytes imports from the carry", py, BNB_CODE, [str(site)], str(site), BNB_CUDA)
        if py["version"] != [3, 12]:
            skip("bitsandbytes import under 3.12", "no CPython 3.12 with torch here (bitsandbytes is py3-none)")


def tree_bytes(out: Path) -> int | None:
    """What the device tool copies: tracked and untracked-not-ignored files (the carry not counted twice)."""
    try:
        ls = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                            capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # the GPU machine's copy of the tree has no .git
        return None
    total = 0
    for rel in filter(None, ls.decode().split("\0")):
        f = REPO / rel
        if f.is_file() and not f.is_symlink() and out not in f.resolve().parents:
            total += f.stat().st_size
    return total


def dir_bytes(d: Path) -> int:
    return sum(f.lstat().st_size for f in d.rglob("*") if f.is_file() or f.is_symlink())


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1]).resolve()
    site = out / "site"
    if not site.is_dir():
        sys.exit(f"FAIL  {site} does not exist: run scripts/gpu-carry.sh first")
    if "BNB_CUDA_VERSION" in os.environ:
        print(f"note  BNB_CUDA_VERSION={os.environ['BNB_CUDA_VERSION']} is set here; it overrides bitsandbytes' "
              "choice of library, so the import checks run without it and the GPU machine must not set it")

    carried = {canonicalize_name(k): v for k, v in check_wheels(out, site).items()}
    check_requirements(site, carried)
    check_bnb_libs(site)
    check_shared_objects(site)
    pycache = [str(p.relative_to(site)) for p in site.rglob("__pycache__")]
    check(not pycache, "no __pycache__ in the carry", ", ".join(pycache))
    check_imports(site)

    carry, site_size, tree = dir_bytes(out), dir_bytes(site), tree_bytes(out)
    total = carry + (tree or 0)
    if tree is None:
        skip("work tree + carry under 64 MiB", f"no git work tree at {REPO}; carry {out.name}/ is {mib(carry)}")
    else:
        print(f"      site {mib(site_size)}, carry {out.name}/ {mib(carry)}, work tree {mib(tree)}, "
              f"together {mib(total)} of {mib(LIMIT)}")
        check(total < LIMIT, "work tree + carry under 64 MiB", mib(total))
    if tree is not None and REPO in out.parents:
        rel = out.relative_to(REPO)
        ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(out)]).returncode == 0
        print(f"note  the device run needs carry=[\"{rel}\"]" if ignored else
              f"note  {rel} is not git-ignored, so it travels as untracked files (counted once above)")

    summary = (f"{len(carried)} wheels, site {mib(site_size)}, tree+carry {mib(total)}; "
               f"{len(failures)} failed, {len(skipped)} skipped")
    print(("FAILED: " + "; ".join(failures) + " -- " if failures else "OK: ") + summary)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
