"""A private team stack for the scale-out tests: PostgreSQL on a free loopback port and an MLflow
server with basic-auth on it (emoexp/stack.py), started once per session and removed afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def team_stack(system_tmp):
    """A running :class:`emoexp.stack.Stack`; skipped without PostgreSQL's server programs
    (CI installs them: a CI run without them fails instead)."""
    from emoexp import stack as S

    try:
        S.pg_bin("initdb")
    except S.StackError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    # outside the session's 0700 folder, in the system's: PostgreSQL runs as postgres (not root)
    # and must get through every folder above its data; mkdtemp makes a 0700 folder, opened below
    root = Path(tempfile.mkdtemp(prefix="emoexp-stack-", dir=system_tmp))
    root.chmod(0o711)
    try:
        st = S.up(root / "stack", port=S.free_port(), basic_auth=True)
        yield st
    finally:
        try:
            S.down(root / "stack")
        except S.StackError:
            pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def on_server(team_stack, monkeypatch):
    """This test's MLflow calls (in-process and in the subprocesses it starts) go to the stack's
    server, logged in as its admin; the session's sqlite store is back afterwards."""
    import mlflow

    before = mlflow.get_tracking_uri()
    for k, v in team_stack.env().items():
        monkeypatch.setenv(k, v)
    mlflow.set_tracking_uri(team_stack.tracking_uri)
    yield team_stack
    mlflow.set_tracking_uri(before)


@pytest.fixture(scope="session")
def features_data(tmp_path_factory) -> Path:
    from emoexp.data.synth_posture import synth_features

    return Path(synth_features(tmp_path_factory.mktemp("scaleout") / "features", subjects=4, seed=0, n=480))
