# The grid, cell ids, the rules' file patterns and the results lock; the per-job config slices and what
# else the rules compute come from the package.
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from repa_mdlm import layout
from repa_mdlm.config import locations
from repa_mdlm.workflow import results_lock, status
from repa_mdlm.analysis.halving import configuration_of, kept_configurations, stopped_cells
from repa_mdlm.config import Config, ConfigError
from repa_mdlm.config.specs import (
    build_teacher_spec,
    cell_spec,
    data_spec,
    generative_spec,
    judge_spec,
    teacher_spec,
    throughput_setting_codes,
    zero_shot_data_spec,
    zero_shot_spec,
)
# what the rules compute from the config (a job's inputs, threads and requests, the report's files)
from repa_mdlm.workflow.snakemake_plan import (
    as_json,
    halving_rung_steps,
    built_teacher_model,
    feature_inputs,
    job_resources,
    job_threads,
    teacher_features_dir,
    teacher_labels,
    tracking_setting,
)

try:
    CFG = Config.from_dict(config)
except ConfigError as error:
    raise WorkflowError(str(error))

R = CFG.results_dir
CELLS = {cell.name: cell for cell in CFG.cells()}
TEACHERS = [t.name for t in CFG.repa.teachers]
LABELS = teacher_labels(CFG)  # every arm's teachers (teacher+tag): what Table 1, the figures and compare list
DATA = f"{R}/{layout.DATA}"
MANIFEST = f"{DATA}/{layout.MANIFEST}"
TOKENIZER = f"{DATA}/{layout.TOKENIZER}"


def run_file(name):
    """A file of a cell's run folder, with the {cell} wildcard."""
    return f"{layout.run_dir(R, '{cell}')}/{name}"


def log_file(rule, name=None):
    return f"{R}/{layout.job_log(rule, name)}"


# Successive halving (halving.smk): the steps of the rungs judged before the end (none: the full grid).
JUDGED_STEPS = halving_rung_steps(CFG)
JUDGED_RUNGS = list(range(1, len(JUDGED_STEPS) + 1))


def finished_cells():
    """The cells that train to the end, and only they read the test set: every cell, or under halving
    the baseline and the configurations the last rung kept (known once that rung's checkpoint job ran)."""
    if not JUDGED_RUNGS:
        return list(CELLS)
    kept = kept_at(JUDGED_RUNGS[-1])
    return [name for name, cell in CELLS.items() if cell.is_baseline or configuration_of(cell) in kept]


def each_finished_cell(pattern, **more):
    """An input function: `pattern` for every cell that trains to the end (finished_cells)."""
    return lambda wildcards: expand(pattern, cell=finished_cells(), **more)

# One writer per results folder: a second Snakemake is told who writes it before it looks at
# any output (Snakemake would first advise --rerun-incomplete, which then hits the lock).
if workflow.is_main_process and "--nolock" not in sys.argv:
    try:
        results_lock.refuse_second_writer(
            R,
            unlocking="--unlock" in sys.argv,
            status_command=(
                "repa-mdlm status --configfile "
                f"{os.path.relpath((workflow.overwrite_configfiles or ['config.yaml'])[0])}"
                f" --results-dir {R}"
            ),
        )
    except results_lock.ResultsLockError as error:
        raise WorkflowError(str(error))


# Trainers of this folder alive now, before this Snakemake starts any (--nolock skips the check above):
# their cells' train jobs are refused, since Snakemake would delete a live run's files (train_guard).
LIVE_TRAINERS = results_lock.live_trainers(R, other_hosts=False) if workflow.is_main_process else {}
# Cells the results folder itself says were trained with another config (status.stale_reason, which
# `repa-mdlm status` reports): train_guard forces their training. Snakemake's own triggers see only this
# working directory's records (.snakemake/): where another one re-trained the folder, the params recorded
# here still match, and the manifest's recorded checksum hides any file date.
STALE_CELLS = status.stale_cells(CFG) if workflow.is_main_process else {}
_WARNED_STALE = set()


def train_guard(wildcards):
    """No input. Refuses to plan a train job for a cell whose trainer lives (results_lock.live_trainers),
    and forces the job of a stale cell, as --forcerun would (Snakemake adds --rerun-incomplete's files
    to the same set while it builds the DAG); only the cells this run asks for get here."""
    trainer = LIVE_TRAINERS.get(wildcards.cell)
    if trainer:
        raise WorkflowError(
            f"{layout.run_dir(R, wildcards.cell)}: pid {trainer['pid']} on {trainer['host']} still trains this "
            "cell, outside this Snakemake; a second trainer would be refused and Snakemake would delete the "
            f"running one's files. Wait for it to end, or stop it with `kill -TERM {trainer['pid']}` (it saves "
            "a checkpoint), then run again.")
    reason = STALE_CELLS.get(wildcards.cell)
    if reason:
        workflow.dag.forcefiles.add(f"{layout.run_dir(R, wildcards.cell)}/{layout.TRAIN_SUMMARY}")
        if wildcards.cell not in _WARNED_STALE:
            _WARNED_STALE.add(wildcards.cell)
            logger.warning(f"{layout.run_dir(R, wildcards.cell)}: {reason}; it is trained again")
    return []


onstart:
    results_lock.claim(R)
    locations.mark_sweep(R)  # a folder of other files is never taken for a sweep's (locations.is_sweep)


onsuccess:
    results_lock.release(R)


onerror:
    results_lock.release(R)


wildcard_constraints:
    cell="|".join(re.escape(name) for name in CELLS) or "NO_CELL",
    teacher="|".join(re.escape(name) for name in TEACHERS) or "NO_TEACHER",
    split="train|val",
    rung=r"\d+",
    step=r"\d+",


# ---- successive halving: what halving.smk's rules read (checkpoints.halving_rung: the judge's decisions)
def rung_record(cell, step):
    return f"{layout.run_dir(R, cell)}/{layout.rung_record(step)}"


def rung_before(cell, step):
    """The record of the cell's rung before `step`: a rung resumes the previous one's checkpoint. None for
    the first rung."""
    earlier = [s for s in JUDGED_STEPS if s < int(step)]
    return [] if CELLS[cell].is_baseline or not earlier else [rung_record(cell, earlier[-1])]


def kept_at(rung):
    """The configurations rung `rung` keeps (its checkpoint job has run)."""
    return kept_configurations(checkpoints.halving_rung.get(rung=str(rung)).output[0])


def judged_at(wildcards):
    """The records rung k judges: every REPA cell's at rung 1, then those of the configurations kept."""
    rung = int(wildcards.rung)
    kept = kept_at(rung - 1) if rung > 1 else None
    cells = [name for name, cell in CELLS.items()
             if not cell.is_baseline and (kept is None or configuration_of(cell) in kept)]
    return [rung_record(name, JUDGED_STEPS[rung - 1]) for name in cells]


def stopped_records(wildcards):
    """Each stopped cell's record at the rung it stopped (every rung's checkpoint job has run)."""
    return [rung_record(cell, step) for rung in JUDGED_RUNGS
            for cell, step in stopped_cells(checkpoints.halving_rung.get(rung=str(rung)).output[0])]
