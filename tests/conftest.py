"""Shared fixtures: tiny synthetic datasets (real formats) and a throwaway MLflow store."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

import pytest

# The tests never touch the user's caches or stores.
warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("emoexp")


# The system's temporary folder, before the session moves it (see _isolated_env): for what must
# be reachable by another user (the scale-out tests' PostgreSQL runs as postgres).
SYSTEM_TMP = tempfile.gettempdir()


@pytest.fixture(scope="session")
def system_tmp() -> str:
    return SYSTEM_TMP


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(session_tmp):
    """Caches, the MLflow store and every temporary file live in the session's folder: what
    libraries leave in the temporary folder (MLflow's downloads without a destination, the
    subprocesses' files) goes with it, and pytest removes it when the session passes
    (``tmp_path_retention_policy = "failed"``), so a run of the suite leaves nothing behind."""
    tmp = session_tmp / "tmp"
    tmp.mkdir()
    values = {"EMOEXP_CACHE_DIR": str(session_tmp / "cache"),
              "MLFLOW_TRACKING_URI": f"sqlite:///{session_tmp / 'mlflow.db'}",
              "TMPDIR": str(tmp)}
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    old_tempdir, tempfile.tempdir = tempfile.tempdir, str(tmp)
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    yield
    tempfile.tempdir = old_tempdir
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    """Checkpoint staging (.emoexp/) goes to the test's own folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _tracking_uri_restored():
    """A test that points MLflow at a store of its own (often in its tmp_path, removed when it
    passes) leaves the next tests on the store they had: the session's, or their module's."""
    import mlflow

    before = mlflow.get_tracking_uri()
    yield
    if mlflow.get_tracking_uri() != before:
        mlflow.set_tracking_uri(before)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: two threads on a shared two-core machine are slower than
    one, and one thread also fixes the result."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def faced_root(session_tmp) -> Path:
    from emoexp.data.synth import synth_faced

    # the plant the engine tests were written for: one exact frequency per class, equally strong on
    # every planted channel (the calibrated defaults are harder: benchmarks/bench_calibration.py)
    return Path(synth_faced(session_tmp / "faced", subjects=5, seed=0, n_samples=1500, freq_jitter=0.0,
                            topography=0.0))


@pytest.fixture(scope="session")
def eav_root(session_tmp) -> Path:
    from emoexp.data.synth import synth_eav

    return Path(synth_eav(session_tmp / "eav", subjects=5, seed=1, trials=20, n_samples=4000))


@pytest.fixture
def tiny(faced_root):
    """Small, fast settings shared by engine tests."""
    return {"window_size": 256, "stride": 128, "batch_size": 32, "log_model": False}


@pytest.fixture
def mlflow_cli_env() -> dict[str, str]:
    """Environment for an `mlflow run` subprocess: the venv on PATH, and no run or experiment
    left in the environment by in-process tests (`mlflow run` refuses both an id and a name)."""
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_model(uri: str, log_path: Path, timeout: float = 120.0):
    """`mlflow models serve` of ``uri`` in its own process group; yields the base URL; always stopped."""
    with serve_models([(uri, log_path)], timeout) as urls:
        yield urls[0]


@contextlib.contextmanager
def serve_models(models: list[tuple[str, Path]], timeout: float = 180.0):
    """`mlflow models serve` of several ``(uri, log_path)`` at once (they start side by side);
    yields their base URLs in order; always stopped."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    procs = []
    try:
        for uri, log_path in models:
            port = _free_port()
            with open(log_path, "wb") as log:
                procs.append((subprocess.Popen(
                    [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
                     "-h", "127.0.0.1", "-p", str(port)],
                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                ), f"http://127.0.0.1:{port}", log_path))
        deadline = time.monotonic() + timeout  # 10-13 s idle; more on a busy 2-core box
        for proc, url, log_path in procs:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"mlflow models serve exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"no /ping answer in {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield [url for _, url, _ in procs]
    finally:
        # each server's own session: its workers go too, and nothing else
        for proc, _, _ in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc, _, _ in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="session")
def model_server():
    """:func:`serve_model`, for tests: ``with model_server(uri, log_path) as url: ...``."""
    return serve_model


@pytest.fixture(scope="session")
def model_servers():
    """:func:`serve_models`: ``with model_servers([(uri, log_path), ...]) as urls: ...``."""
    return serve_models


@pytest.fixture(scope="session")
def word_tokenizer():
    """A small word-level tokenizer built offline (capital letters, ':' and DEAP's channel names),
    of the kind a pretrained model's directory holds."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from emoexp.data.deap import DEAP_EEG_CHANNELS

    words = ["<s>", "<unk>", ":", *[chr(c) for c in range(ord("A"), ord("Z") + 1)], *DEAP_EEG_CHANNELS]
    core = HFTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", unk_token="<unk>")
