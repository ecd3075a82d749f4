"""Atomic file writes: readers (another process, a resumed run, a crash mid-write) see the old
file or the new one under the final name, never half of one.

Every writer in emoexp goes through :func:`atomic_write`: checkpoints, data caches, imported
layouts, synthetic corpora, dashboards, app outputs. The recipe: write a temporary file in the
target's folder (same file system, so the rename is atomic), flush and fsync it, ``os.replace``
it over the target; on any failure the temporary file is removed and the old target is left
as it was. Importing this module is cheap (numpy is imported by the functions that use it).

>>> from emoexp.data.io import atomic_write_text
>>> atomic_write_text("report.txt", "done\\n")  # doctest: +SKIP
PosixPath('report.txt')
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

Writer = Callable[[IO[bytes]], Any]   # writes the content to a binary file object


def _temp_name(path: Path) -> Path:
    # Hidden, next to the target, unique per call (two processes may write one cache file).
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def atomic_write(path: str | os.PathLike, content: bytes | Writer, *, fsync: bool = True) -> Path:
    """Write ``content`` (bytes, or a function that writes to a binary file object) to ``path``
    atomically; creates the parent folder. Returns ``path`` as a :class:`~pathlib.Path`.

    The temporary file is opened with ``open(..., "xb")`` rather than ``mkstemp``, so the final
    file gets the usual permissions (the umask's), not mkstemp's owner-only 0600.
    ``fsync=False`` skips the flush to disk (a crash may then leave an empty file under the
    final name on some file systems; a failed write still never does).

    >>> atomic_write("weights.pt", lambda f: torch.save(state, f))  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, "xb") as f:
            if isinstance(content, bytes | bytearray | memoryview):
                f.write(content)
            else:
                content(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Temporary files that :func:`atomic_write` left in ``folder`` because its process was killed
    mid-write (SIGKILL skips the clean-up): those whose writer (the pid in the name) is gone."""
    import re

    pattern = re.compile(r"\..+\.(\d+)-[0-9a-f]{8}\.tmp")
    out = []
    folder = Path(folder)
    if not folder.is_dir():
        return out
    for p in folder.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_file() and not _pid_alive(int(m.group(1))):
            out.append(p)
    return sorted(out)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove :func:`stale_temp_files` from ``folder``; returns what was removed."""
    gone = stale_temp_files(folder)
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """``Path.write_bytes``, atomically (see :func:`atomic_write`)."""
    return atomic_write(path, bytes(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8",
                      fsync: bool = True) -> Path:
    """``Path.write_text``, atomically (see :func:`atomic_write`); UTF-8 unless told."""
    return atomic_write(path, text.encode(encoding), fsync=fsync)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None,
                      fsync: bool = True, **dumps_kw: Any) -> Path:
    """``json.dumps(obj)`` to ``path``, atomically; a trailing newline when ``indent`` is given."""
    text = json.dumps(obj, indent=indent, **dumps_kw)
    return atomic_write_text(path, text + "\n" if indent is not None else text, fsync=fsync)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray, *, fsync: bool = True) -> Path:
    """``np.save`` to ``path`` (no pickles), atomically. Written through a file object, so no
    ``.npy`` is appended to the name."""
    import numpy as np

    a = np.ascontiguousarray(array)
    return atomic_write(path, lambda f: np.save(f, a, allow_pickle=False), fsync=fsync)


def atomic_save_npz(path: str | os.PathLike, *, compressed: bool = False, fsync: bool = True,
                    **arrays: np.ndarray) -> Path:
    """``np.savez`` (``compressed``: ``np.savez_compressed``) of ``arrays`` to ``path``,
    atomically; the name is kept as given."""
    import numpy as np

    save = np.savez_compressed if compressed else np.savez
    return atomic_write(path, lambda f: save(f, **arrays), fsync=fsync)
