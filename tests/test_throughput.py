"""Speed-only settings (read-ahead, activation checkpointing, torch.compile) leave the
training math unchanged, and toggling them never makes Snakemake re-run a finished cell."""

import json
import threading

import numpy as np
import pytest
import torch

from repa_mdlm.config import Cell
from repa_mdlm.config.specs import THROUGHPUT_ONLY_TRAIN_KEYS, cell_spec
from repa_mdlm.data.dataset import Prefetcher
from repa_mdlm.training.trainer import Trainer, train_cell

from .conftest import tiny_config
from .test_train import REPA_CELL, _curve


def test_prefetcher_returns_the_synchronous_batches_in_step_order():
    loaded_on = []

    def load(step):
        loaded_on.append(threading.current_thread().name)
        return {"x0": torch.full((2, 3), step), "indices": np.array([step])}

    with Prefetcher(load, depth=3, stop=10) as prefetch:
        batches = [prefetch.get(step) for step in range(4, 10)]
    assert [int(b["x0"][0, 0]) for b in batches] == list(range(4, 10))
    assert all(name.startswith("prefetch") for name in loaded_on)  # read off the training thread
    assert len(loaded_on) == 6  # nothing loaded past `stop`, nothing loaded twice


def test_prefetcher_raises_the_loaders_error_in_the_caller():
    def load(step):
        if step == 2:
            raise OSError("disk gone")
        return {"x0": torch.zeros(1)}

    with Prefetcher(load, depth=2) as prefetch:
        prefetch.get(0)
        prefetch.get(1)
        with pytest.raises(OSError, match="disk gone"):
            prefetch.get(2)


@pytest.mark.parametrize("setting", [{"prefetch_batches": 0}, {"prefetch_batches": 4},
                                     {"activation_checkpointing": True}])
def test_speed_settings_give_the_same_loss_curve(data_dir, repa_features, tmp_path, setting):
    base = tiny_config(train={"steps": 6, "prefetch_batches": 2})
    other = tiny_config(train={"steps": 6, **setting})
    train_cell(base, REPA_CELL, data_dir, tmp_path / "base", repa_features)
    train_cell(other, REPA_CELL, data_dir, tmp_path / "other", repa_features)
    a, b = _curve(tmp_path / "base"), _curve(tmp_path / "other")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for row_a, row_b in zip(a, b):
        for key in ("loss", "nelbo", "repa", "grad_norm", "val_nelbo"):
            if key in row_a:
                if "prefetch_batches" in setting:  # same arithmetic, only earlier: bit-identical
                    assert row_a[key] == row_b[key], key
                else:  # recomputed activations may round differently
                    assert row_b[key] == pytest.approx(row_a[key], rel=1e-5), key


def test_activation_checkpointing_recomputes_blocks_in_backward(data_dir, repa_features, tmp_path):
    calls = []
    trainer = Trainer(tiny_config(train={"activation_checkpointing": True}), REPA_CELL, data_dir, tmp_path,
                      repa_features)
    block_mlp = trainer.model.model.layers[0].mlp  # inside the checkpointed forward
    forward = block_mlp.forward  # (module hooks do not fire in the recompute; count the calls)
    block_mlp.forward = lambda *args, **kwargs: (calls.append(1), forward(*args, **kwargs))[1]
    trainer.train_step(0)
    micro_steps = trainer.cfg.train.global_batch // trainer.cfg.train.micro_batch
    assert len(calls) == 2 * micro_steps  # each block ran once more, in backward


@pytest.mark.slow
@pytest.mark.parametrize("mode", [True, "blocks"])
def test_compiled_backbone_matches_eager(data_dir, repa_features, tmp_path, monkeypatch, mode):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    eager = Trainer(tiny_config(), REPA_CELL, data_dir, tmp_path / "runs" / "eager", repa_features)
    compiled = Trainer(tiny_config(train={"compile": mode}), REPA_CELL, data_dir, tmp_path / "runs" / "compiled",
                       repa_features)
    # what really runs compiled: the whole backbone as one graph, or each block on its own
    backbone_compiled = compiled.model.model._compiled_call_impl is not None
    blocks_compiled = [block._compiled_call_impl is not None for block in compiled.model.model.layers]
    assert (backbone_compiled, set(blocks_compiled)) == ((True, {False}) if mode is True else (False, {True}))
    assert (tmp_path / "runs" / ".torch-compile-cache").is_dir()  # shared by the cells of a sweep
    # compiling in place keeps parameter names: checkpoints stay interchangeable
    assert list(compiled.model.state_dict()) == list(eager.model.state_dict())
    for step in range(3):
        a, b = eager.train_step(step), compiled.train_step(step)
        for key in ("loss", "nelbo", "repa", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (step, key)


def test_compile_modes_travel_as_integer_codes_and_back():
    from repa_mdlm.config import ConfigError
    from repa_mdlm.config.specs import apply_throughput_setting_code, throughput_setting_codes

    for value, mode in ((False, "off"), (True, "backbone"), ("backbone", "backbone"), ("blocks", "blocks")):
        train = tiny_config(train={"compile": value}).train
        codes = throughput_setting_codes(train)
        assert all(isinstance(code, int) for code in codes.values())  # Snakemake resources
        apply_throughput_setting_code(train, "compile", codes["compile"])
        assert train.compile == mode
    with pytest.raises(ConfigError, match=r"train\.compile = 'regional'"):
        tiny_config(train={"compile": "regional"})


def test_speed_settings_are_not_part_of_a_cells_spec():
    cell = Cell("baseline", None, None, 0)
    slow = tiny_config()
    fast = tiny_config(train={"prefetch_batches": 8, "activation_checkpointing": True, "compile": True})
    assert json.dumps(cell_spec(slow, cell)) == json.dumps(cell_spec(fast, cell))
    assert not set(THROUGHPUT_ONLY_TRAIN_KEYS) & set(cell_spec(fast, cell)["train"])


def test_train_cli_speed_flags_override_the_spec(data_dir, tmp_path, monkeypatch):
    from repa_mdlm.workflow import cli

    seen = {}
    monkeypatch.setattr("repa_mdlm.training.trainer.train_cell", lambda cfg, *args, **kwargs: seen.update(cfg=cfg) or {})
    cfg = tiny_config(train={"prefetch_batches": 2})
    cli.main(["train", "--spec", json.dumps(cell_spec(cfg, Cell("baseline", None, None, 0))), "--cell", "baseline_s0",
              "--data", str(data_dir), "--run-dir", str(tmp_path), "--prefetch-batches", "0", "--compile", "1",
              "--activation-checkpointing", "1"])
    train = seen["cfg"].train
    assert (train.prefetch_batches, train.compile, train.activation_checkpointing) == (0, "backbone", True)
    assert train.steps == cfg.train.steps


def test_a_step_finds_the_masked_positions_once_and_never_gathers_by_boolean_mask(data_dir, repa_features, tmp_path):
    """On a GPU, each `nonzero` and each boolean-mask gather stalls the host until the device catches
    up. A step of 2 micro-batches used to make 3 such calls per micro-batch; now one `nonzero` per step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    trainer = Trainer(tiny_config(), REPA_CELL, data_dir, tmp_path / "run", repa_features)
    assert trainer.cfg.train.global_batch // trainer.cfg.train.micro_batch == 2

    class Spy(TorchDispatchMode):
        nonzero = boolean_gathers = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.nonzero.default:
                Spy.nonzero += 1
            if func is torch.ops.aten.index.Tensor and any(
                    i is not None and i.dtype == torch.bool for i in args[1]):
                Spy.boolean_gathers += 1
            return func(*args, **(kwargs or {}))

    batch = trainer.load_batch(0)
    with Spy():
        trainer.train_step(0, batch)
    assert (Spy.nonzero, Spy.boolean_gathers) == (1, 0)
