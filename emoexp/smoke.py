"""The smoke settings: per task and synthetic dataset, the short training the README quotes, on
which the generator's *default* set is calibrated (the classical baseline mid-range, the task's
default model reaching it; benchmarks/bench_calibration.py measures, tests/test_calibration.py
asserts, the README's "Synthetic data and smoke settings" table quotes).

Plain data, no imports: a case names its task, the dataset registry's name, the config
overrides of the smoke setting and generator options over the defaults (train_eeg_llm only: its
default set takes an hour a run on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Smoke:
    task: str
    dataset: str
    settings: dict[str, Any]                                   # config overrides
    synth: dict[str, Any] = field(default_factory=dict)        # generator options over its defaults


_FACE = {"backbone": "small_cnn", "epochs": 8, "lr": 0.001}

SMOKE: dict[str, Smoke] = {
    "pretrain_faced": Smoke("pretrain_faced", "faced", {"epochs": 6}),
    "finetune_eav": Smoke("finetune_eav", "eav", {"epochs": 8, "lr": 0.001}),
    "finetune_eav+audio": Smoke("finetune_eav", "eav", {"epochs": 8, "lr": 0.001, "use_audio": True}),
    "train_face/fer2013": Smoke("train_face", "fer2013", {"dataset": "fer2013", **_FACE}),
    "train_face/affectnet": Smoke("train_face", "affectnet", {"dataset": "affectnet", **_FACE}),
    # seed 001's augmentation is for fine-tuning ImageNet weights: from random weights it holds
    # DenseNet121 on the class prior for 8 epochs (benchmarks/README.md, "Calibration")
    "train_face/densenet121": Smoke("train_face", "fer2013", {"dataset": "fer2013", "backbone": "densenet121",
                                                              "epochs": 8, "lr": 0.001, "augment": False}),
    "train_speech": Smoke("train_speech", "ravdess", {"epochs": 8, "lr": 0.001, "augment": False}),
    "train_posture": Smoke("train_posture", "posture", {"epochs": 8}),
    "train_classifier": Smoke("train_classifier", "features", {"epochs": 8}),
    "train_eeg_llm": Smoke("train_eeg_llm", "deap", {"overlap": 0, "epochs": 4, "freeze_epochs": 1, "lr": 0.001},
                           synth={"subjects": 6, "trials": 20, "seconds": 10}),
}
