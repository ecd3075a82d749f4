"""Contract tests, parametrized over the three registries: registering a model, a dataset or a
task puts it under these.

* every model builds from its example kwargs and runs forward and backward on its example input,
  with finite outputs and finite gradients reaching every trainable parameter;
* every dataset format's tiny synthetic set (its registry entry's ``tiny`` options) passes its
  own reader, and every raw-file suffix ``emoexp predict`` reads has one reader;
* every task trains one epoch, untracked, on a tiny synthetic set of its dataset.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from emoexp.data.registry import get_dataset, list_datasets, synthesize
from emoexp.models import example_model, list_models
from emoexp.tasks import get_task, list_tasks


@pytest.fixture(autouse=True)
def _one_thread():
    # Two threads on a shared two-core machine are slower than one; one also fixes the result.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------------
# models


@pytest.mark.parametrize("name", list_models())
def test_model_forward_and_backward(name: str) -> None:
    model, example = example_model(name)
    model.train()
    out = model(example)
    outs = list(out.values()) if isinstance(out, dict) else [out]
    assert outs, f"{name}: no output"
    for o in outs:
        assert torch.isfinite(o).all(), f"{name}: non-finite output"
    # A random projection of the outputs, so no gradient cancels by symmetry.
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, f"{name}: nothing to train"
    for pname, p in trainable:
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
    # (a LoRA A matrix gets a zero gradient while its B starts at zero, so: non-zero somewhere)
    assert any(p.grad.abs().sum() > 0 for _, p in trainable), f"{name}: every gradient is zero"


# ------------------------------------------------------------------------------------------------
# datasets


def _tiny(name: str, out: Path, **options: Any) -> Path:
    """The format's tiny synthetic set (its registry ``tiny`` options, then ``options``)."""
    opts = {**get_dataset(name).tiny, **options}
    return synthesize(name, out, subjects=opts.pop("subjects", 1), seed=0, **opts)


def _size(loaded: Any) -> int:
    """How much a reader found: its recordings, samples or items, whatever it calls them."""
    for attr in ("subject_ids", "labels", "ids", "files", "subject"):
        value = getattr(loaded, attr, None)
        if value is not None:
            return len(value)
    return len(loaded)


@pytest.mark.parametrize("name", list_datasets())
def test_dataset_synthetic_set_passes_its_reader(name: str, tmp_path: Path) -> None:
    entry = get_dataset(name)
    assert entry.modalities and entry.summary, f"{name}: say what it holds"
    loaded = entry.read(_tiny(name, tmp_path / name))
    if isinstance(loaded, Iterator):
        loaded = list(loaded)
    assert _size(loaded) > 0, f"{name}: the reader found nothing in its own synthetic set"


def test_raw_file_suffixes_have_one_reader_each() -> None:
    from emoexp.data.registry import file_readers

    readers = file_readers()            # raises if two formats claim a suffix with different readers
    assert {".npy", ".pkl", ".mat", ".dat", ".wav", ".jpg", ".jpeg", ".png"} <= set(readers)
    assert all(s.startswith(".") and s == s.lower() and callable(r) for s, r in readers.items())


# ------------------------------------------------------------------------------------------------
# tasks

# Per task: generator options over the format's tiny ones, and config overrides that keep one
# epoch to seconds. A task registered without an entry here fails loudly instead of going untested.
TASKS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "pretrain_faced": ({"subjects": 3, "n_samples": 512},
                       {"window_size": 128, "stride": 128, "latent_dim": 16}),
    "finetune_eav": ({"subjects": 3, "n_samples": 1000},
                     {"window_size": 128, "stride": 128, "latent_dim": 16}),
    "train_eeg_llm": ({"subjects": 3, "trials": 4, "seconds": 3},
                      {"window_size": 64, "overlap": 0, "downsample": 8, "lora_r": 2, "freeze_epochs": 0}),
    "train_face": ({"n_per_class": 6}, {"dataset": "fer2013", "backbone": "small_cnn", "augment": False}),
    "train_speech": ({"subjects": 3}, {"emotion_subset": "basic4", "clip_seconds": 1.0, "context_layers": 1,
                                       "n_mels": 16, "augment": False}),
    "train_posture": ({"n_per_side": "train:8,val:4"}, {"seq_length": 12, "tcn_channels": 8, "lstm_hidden": 8}),
    "train_classifier": ({"n": 40}, {"hidden": "8"}),
}


def test_every_task_has_a_tiny_setting() -> None:
    assert set(TASKS) == set(list_tasks())


@pytest.mark.parametrize("name", list_tasks())
def test_task_fits_one_epoch(name: str, tmp_path: Path) -> None:
    from emoexp import engine
    from emoexp.config import apply_overrides

    task = get_task(name)
    synth_options, overrides = TASKS[name]
    cfg = task.default_config()
    dataset = overrides.get("dataset") or cfg.to_dict().get("dataset") or task.dataset
    data_dir = _tiny(dataset, tmp_path / "data", **synth_options)
    cfg = apply_overrides(cfg, {
        "data_dir": str(data_dir), "epochs": 1, "batch_size": 8, "lr": 1e-3, "device": "cpu",
        "checkpoint_every": 0, "log_model": False, "output_dir": str(tmp_path / "run"), **overrides,
    })
    result = engine.fit(task, cfg, track=False)
    assert result.run_id is None and len(result.history) == 1
    assert math.isfinite(result.history[0]["train_loss"]), result.history
    assert math.isfinite(result.best_value)
