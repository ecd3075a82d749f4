"""Where the project's files are, and which code a run was made by.

``project_dir`` finds the folder holding MLproject; ``source_tags`` gives the tags that say which
code made a run (the git commit of the emoexp checkout, when there is one, and the emoexp version),
the same ones ``mlflow run`` sets, so runs started by the ``emoexp`` command carry them too.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

# MLflow's own tag names (mlflow.utils.mlflow_tags), spelled here so that importing this module
# stays cheap; `mlflow run` sets the first two itself.
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
MLFLOW_SOURCE_NAME = "mlflow.source.name"
TAG_VERSION = "emoexp.version"
TAG_GIT_DIRTY = "emoexp.git_dirty"


def project_dir() -> Path:
    """The folder holding MLproject: the working directory under ``mlflow run``, else the repo."""
    cwd = Path.cwd()
    if (cwd / "MLproject").is_file():
        return cwd
    repo = PACKAGE_DIR.parent
    if (repo / "MLproject").is_file():
        return repo
    raise FileNotFoundError("no MLproject found in the working directory or beside the emoexp package")


def code_fingerprint() -> str:
    """A hash of the package source, MLproject and search spaces: what a step's result depends on."""
    h = hashlib.sha256()
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    proj = project_dir()
    files += [proj / "MLproject", *sorted((proj / "experiments").rglob("*.yaml"))]
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(f.parents[len(f.parents) - 1])).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    try:
        return pkg_version("emoexp")
    except PackageNotFoundError:
        return "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PACKAGE_DIR.parent), *args], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def source_tags() -> dict[str, str]:
    """``mlflow.source.git.commit`` (when emoexp runs from a git checkout), whether that checkout had
    uncommitted changes, and ``emoexp.version``; computed once per process."""
    tags = {TAG_VERSION: version()}
    top = _git("rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == PACKAGE_DIR.parent:  # the checkout that holds this package
        commit = _git("rev-parse", "HEAD")
        if commit:
            tags[MLFLOW_GIT_COMMIT] = commit
            dirty = _git("status", "--porcelain", "--untracked-files=no")
            tags[TAG_GIT_DIRTY] = "true" if dirty else "false"
    return tags
