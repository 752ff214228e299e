"""Every command an error message suggests does what it says: run verbatim (plus the sweep's profile),
it rebuilds the damaged file. Bit rot keeps the file's mtime, so Snakemake alone would see nothing to do."""

import os
import re
import shlex

import pytest

from repa_mdlm.data.dataset import load_tokenizer, open_split
from repa_mdlm.io import DataError

from ..test_workflow import snakemake

pytestmark = [pytest.mark.faults, pytest.mark.workflow, pytest.mark.slow]


def suggested(message: str) -> list[str]:
    commands = re.findall(r"`(snakemake [^`]+)`", message)
    assert len(commands) == 1, message
    return shlex.split(commands[0])[1:]


def damage(path, how):
    stat = path.stat()
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[:-512]
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # bit rot: the mtime stays


def test_the_commands_in_token_shard_and_tokenizer_errors_rebuild_them(tmp_path):
    results = tmp_path / "demo"
    profile = ("--profile", "profiles/demo", "--config", f"results_dir={results}", "--nolock")
    data = results / "data"
    snakemake(str(data / "manifest.json"), *profile)
    for split, how in (("train", "flip"), ("val", "truncate")):
        damage(data / f"{split}.bin", how)
        with pytest.raises(DataError) as error:
            open_split(data, split, verify=True)
        plain = snakemake(str(data / "manifest.json"), *profile)  # why the suggested command forces the job
        assert "Nothing to be done" in plain.stdout + plain.stderr
        snakemake(*suggested(str(error.value)), *profile)
        open_split(data, split, verify=True)  # rebuilt, checksum and size as the manifest says
    (data / "test.bin").unlink()
    with pytest.raises(DataError) as error:
        open_split(data, "test", verify=True)
    snakemake(*suggested(str(error.value)), *profile)
    open_split(data, "test", verify=True)
    damage(data / "tokenizer" / "tokenizer.json", "flip")
    with pytest.raises(DataError) as error:
        load_tokenizer(data / "tokenizer")
    snakemake(*suggested(str(error.value)), *profile)
    load_tokenizer(data / "tokenizer")
    open_split(data, "train", verify=True)


def test_the_commands_in_metrics_summary_and_feature_errors_rebuild_them(tmp_path):
    from repa_mdlm.analysis.runs import read_metrics
    from repa_mdlm.teachers.teacher import FeatureCache

    results = tmp_path / "demo"
    profile = ("--profile", "profiles/demo", "--config", f"results_dir={results}", "--nolock")
    run = results / "runs" / "baseline_s0"
    features = results / "teachers" / "tiny-qwen3" / "features"
    snakemake(str(run / "metrics.json"), str(features / "train.npy"), *profile)

    def rot_a_digit(path):  # valid JSON, plausible numbers, same mtime
        stat = path.stat()
        text = path.read_text()
        digit = next(i for i, c in enumerate(text) if c.isdigit() and text[i - 1] in " .")
        path.write_text(text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:])
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    for damaged, rule in ((run / "metrics.json", "evaluate"), (run / "train_summary.json", "train")):
        before = damaged.stat().st_mtime_ns
        rot_a_digit(damaged)
        with pytest.raises(DataError, match=rf"{damaged}: its content differs from the checksum") as error:
            read_metrics(run / "metrics.json")
        assert f"--forcerun {rule}`" in str(error.value)
        snakemake(*suggested(str(error.value)), *profile)
        assert damaged.stat().st_mtime_ns > before  # rebuilt by its own rule
        snakemake(str(run / "metrics.json"), *profile)  # a new training summary is evaluated again
        read_metrics(run / "metrics.json")

    damage(features / "train.npy", "flip")
    with pytest.raises(DataError) as error:
        FeatureCache(features / "train")
    snakemake(*suggested(str(error.value)), *profile)
    FeatureCache(features / "train")
