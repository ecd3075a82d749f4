"""The synthetic sets' calibration: on each generator's defaults the task's default model, at the
README's smoke epochs, does at least as well as the classical baseline (minus ``MARGIN``), learns
over several epochs (epoch 1 below its best) and predicts more than one class.

benchmarks/bench_calibration.py prints the same comparison as a table (benchmarks/README.md).
The cheap models run in the fast suite; the others take minutes on CPU and are marked slow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emoexp import engine
from emoexp.baselines import fit_baseline
from emoexp.config import apply_overrides
from emoexp.data.registry import synthesize
from emoexp.tasks import get_task

# deep best validation macro-F1 >= baseline validation macro-F1 - MARGIN: one validation split of a
# few subjects moves either by a few points between seeds
MARGIN = 0.05
# epoch 1 must be clearly below the best epoch: the curve rises instead of starting saturated
RISE = 0.1

SLOW = pytest.mark.slow(reason="minutes on CPU: a default-sized synthetic set at the smoke epochs")

# name: (task, dataset, generator options over its defaults, smoke setting)
CASES: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "train_classifier": ("train_classifier", "features", {}, {"epochs": 8}),
    "train_posture": ("train_posture", "posture", {}, {"epochs": 8}),
    "pretrain_faced": ("pretrain_faced", "faced", {}, {"epochs": 6}),
    "finetune_eav": ("finetune_eav", "eav", {"with_video": False}, {"epochs": 8, "lr": 0.001}),
    "finetune_eav+audio": ("finetune_eav", "eav", {"with_video": False}, {"epochs": 8, "lr": 0.001, "use_audio": True}),
    "train_face/fer2013": ("train_face", "fer2013", {}, {"dataset": "fer2013", "backbone": "small_cnn", "epochs": 8, "lr": 0.001}),
    "train_face/affectnet": ("train_face", "affectnet", {},
                             {"dataset": "affectnet", "backbone": "small_cnn", "epochs": 8, "lr": 0.001}),
    "train_speech": ("train_speech", "ravdess", {}, {"epochs": 8, "lr": 0.001, "augment": False}),
}
# Not calibrated yet: the random-init wav2vec2 + log-mel model climbs 0.21 -> 0.48 in 8 epochs
# against the MFCC baseline's 0.72 (benchmarks/README.md, "Calibration"). strict: when it passes,
# the mark must go.
NOT_YET = {"train_speech": "deep 0.48 after 8 epochs, still rising, vs the MFCC baseline's 0.72"}
FAST = {"train_classifier"}


@pytest.fixture(scope="module")
def calibrated_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("calibrated")


def _marks(name: str) -> tuple:
    marks = () if name in FAST else (SLOW,)
    if name in NOT_YET:
        marks += (pytest.mark.xfail(reason=NOT_YET[name], strict=True),)
    return marks


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in CASES])
def test_deep_model_matches_the_baseline_on_the_calibrated_set(name: str, calibrated_root: Path):
    task_name, dataset, synth_options, smoke = CASES[name]
    data_dir = synthesize(dataset, calibrated_root / name.replace("/", "-"), seed=0, **synth_options)
    task = get_task(task_name)
    cfg = task.prepare(apply_overrides(task.default_config(), {
        "data_dir": str(data_dir), "device": "cpu", "log_model": False, "checkpoint_every": 0, **smoke}))
    data = task.build_data(cfg)
    base = fit_baseline(task, cfg, data)
    result = engine.fit(task, cfg, track=False, data=data)
    curve = [h["val_macro_f1"] for h in result.history]
    best = max(range(len(curve)), key=curve.__getitem__)
    assert curve[best] >= base["val_macro_f1"] - MARGIN, (curve, base["val_macro_f1"])
    assert curve[0] <= curve[best] - RISE, curve
    predicted = [c for c in data.class_names if result.history[best][f"val_f1.{c}"] > 0]
    assert len(predicted) > 1, result.history[best]
