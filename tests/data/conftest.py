"""Tiny synthetic datasets shared by the data tests, and a private cache folder per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoexp.data.synth import synth_eav, synth_faced

FACED_SAMPLES = 1250     # 5 s at 250 Hz per clip
EAV_SAMPLES = 2000       # 4 s at 500 Hz per trial
EAV_TRIALS = 20


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty cache folder, so no test sees another's cache files."""
    path = tmp_path / "cache"
    monkeypatch.setenv("EMOEXP_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def faced_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: tests that modify files copy it first."""
    return synth_faced(tmp_path_factory.mktemp("faced"), subjects=3, seed=1, n_samples=FACED_SAMPLES,
                       freq_jitter=0.0, topography=0.0)   # exact, equal plants (test_synth checks them)


@pytest.fixture(scope="session")
def eav_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: tests that modify files copy it first."""
    return synth_eav(tmp_path_factory.mktemp("eav"), subjects=3, seed=1, trials=EAV_TRIALS,
                     n_samples=EAV_SAMPLES, freq_jitter=0.0, topography=0.0)   # exact plants (test_synth)
