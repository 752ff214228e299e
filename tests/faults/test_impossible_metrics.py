"""A metrics.json that cannot be right never becomes a Table 1 row: impossible or inconsistent values,
and strings where numbers belong, stop `repa-mdlm aggregate` with the file and the key named."""

import json
import math
import re

import pytest

from repa_mdlm.workflow.cli import main

from ..test_aggregate import metrics, write_metrics

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("change, named", [
    ({"test_ppl": -5.0, "test_nelbo": -1.0}, r"an N-ELBO is >= 0 and a PPL >= 1"),
    ({"test_ppl": 50.0}, r"test_ppl = 50.0 is not exp\(test_nelbo"),
    ({"test_ppl": "85.0"}, r"test_ppl = '85.0' is not a finite number"),
    ({"test_nelbo": float("nan")}, r"test_nelbo = nan is not a finite number"),
    ({"test_ppl": float("inf"), "test_nelbo": float("inf")}, r"is not a finite number"),
    ({"test_nelbo_se": -0.1}, r"test_nelbo_se = -0.1 is not a non-negative number"),
    # one test sequence: no standard error; unknown is null, a NaN is refused (issue 25)
    ({"test_nelbo_se": float("nan")}, r"test_nelbo_se = nan: .* set evaluate.sequences >= 2.*--forcerun evaluate"),
    ({"train_wall_s": 0.0}, r"train_wall_s, train_tokens_per_s and test_tokens must be > 0.*--forcerun train"),
    ({"test_nelbo": 800.0}, r"is not exp\(test_nelbo = 800\.0\)"),
    ({"steps": True}, r"steps = True is not a finite number"),
    ({"test_ppl_ci95": ["a", "b"]}, r"test_ppl_ci95 must be \[lo, hi\]"),
])
def test_impossible_metrics_stop_the_table_naming_the_file(tmp_path, capsys, change, named):
    cells = [metrics("baseline", 0, 100.0, 1000.0), metrics("a", 0, 85.0, 1010.0, layer=3, weight=0.5)]
    cells[1].update(change)
    paths = write_metrics(tmp_path, cells)
    assert main(["aggregate", "--metrics", *paths, "--out-dir", str(tmp_path / "tables")]) == 3
    err = capsys.readouterr().err
    assert paths[1] in err and "snakemake" in err and "--forcerun " in err
    assert re.search(named, err), err
    assert not (tmp_path / "tables" / "table1.csv").exists()


def test_real_metrics_pass(tmp_path):
    cells = [metrics("baseline", 0, 100.0, 1000.0), metrics("a", 0, 85.0, 1010.0, layer=3, weight=0.5)]
    paths = write_metrics(tmp_path, cells)
    assert main(["aggregate", "--metrics", *paths, "--out-dir", str(tmp_path / "tables")]) == 0
    assert math.isclose(json.loads(open(paths[1]).read())["test_ppl"], 85.0)


def test_bit_rot_in_a_plausible_metrics_file_is_seen_by_its_checksum(tmp_path, capsys):
    """A flipped digit can leave metrics.json valid and plausible (a PPL of 85 read as 35): only the
    content checksum the evaluate step writes tells, and the table stops naming the file."""
    import os

    from repa_mdlm.io import atomic_write_checked_json

    cells = [metrics("baseline", 0, 100.0, 1000.0), metrics("a", 0, 85.0, 1010.0, layer=3, weight=0.5)]
    paths = write_metrics(tmp_path, cells)
    for path, cell in zip(paths, cells):
        atomic_write_checked_json(path, cell)
    assert main(["aggregate", "--metrics", *paths, "--out-dir", str(tmp_path / "tables")]) == 0
    text = open(paths[1]).read()
    stat = os.stat(paths[1])
    rotten = text.replace('"train_wall_s": 1010.0', '"train_wall_s": 1070.0')
    assert rotten != text
    with open(paths[1], "w") as f:
        f.write(rotten)
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert main(["aggregate", "--metrics", *paths, "--out-dir", str(tmp_path / "tables2")]) == 3
    err = capsys.readouterr().err
    assert f"{paths[1]}: its content differs from the checksum recorded in it" in err, err
    assert f"`snakemake {paths[1]} --forcerun evaluate`" in err
