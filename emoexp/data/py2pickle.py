"""Write pickles the way Python 2's cPickle did (protocol 2), for the synthetic datasets whose real
files come from Python 2 (DEAP's ``sNN.dat``).

Python 3's own pickler cannot: it writes text as unicode (``BINUNICODE``) and bytes through
``_codecs.encode``, where Python 2 wrote its byte strings, a dict key ``'data'`` and an array's
raw buffer alike, as ``BINSTRING``. Reading such a file under Python 3 needs a decoding for those
byte strings (``encoding='latin1'``: keys become text, numpy takes the buffer back as latin-1
text), which is the path the real files take through :mod:`emoexp.data.safe_pickle`.

Supported: dicts, lists, tuples, ``str`` (written as a Python 2 byte string, so latin-1 only),
``bytes``, ints, floats, booleans, None and numeric numpy arrays (as numpy 1.x under Python 2
reduced them: ``numpy.core.multiarray._reconstruct`` and a ``(1, shape, dtype, fortran, raw)``
state).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# the protocol-2 opcodes cPickle used
_PROTO, _STOP, _MARK = b"\x80", b".", b"("
_NONE, _TRUE, _FALSE = b"N", b"\x88", b"\x89"
_BININT, _BININT1, _BININT2, _LONG1 = b"J", b"K", b"M", b"\x8a"
_BINFLOAT = b"G"
_SHORT_BINSTRING, _BINSTRING = b"U", b"T"
_EMPTY_DICT, _SETITEMS, _EMPTY_LIST, _APPENDS = b"}", b"u", b"]", b"e"
_TUPLE, _EMPTY_TUPLE, _TUPLE1, _TUPLE2, _TUPLE3 = b"t", b")", b"\x85", b"\x86", b"\x87"
_GLOBAL, _REDUCE, _BUILD = b"c", b"R", b"b"


def dumps(obj: Any) -> bytes:
    """``obj`` as the bytes Python 2's ``cPickle.dumps(obj, 2)`` would give (memo puts left out)."""
    out: list[bytes] = [_PROTO + b"\x02"]
    _write(obj, out)
    out.append(_STOP)
    return b"".join(out)


def dump(obj: Any, file: BinaryIO | str | os.PathLike) -> None:
    """Write :func:`dumps` of ``obj`` to an open binary file or a path."""
    if isinstance(file, str | os.PathLike):
        Path(file).write_bytes(dumps(obj))
    else:
        file.write(dumps(obj))


def _string(raw: bytes) -> bytes:
    if len(raw) < 256:
        return _SHORT_BINSTRING + bytes([len(raw)]) + raw
    return _BINSTRING + struct.pack("<i", len(raw)) + raw


def _int(v: int) -> bytes:
    if 0 <= v < 256:
        return _BININT1 + bytes([v])
    if 0 <= v < 65536:
        return _BININT2 + struct.pack("<H", v)
    if -(2 ** 31) <= v < 2 ** 31:
        return _BININT + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return _LONG1 + bytes([len(raw)]) + raw


def _tuple(items: tuple, out: list[bytes]) -> None:
    if len(items) <= 3:
        for x in items:
            _write(x, out)
        out.append((_EMPTY_TUPLE, _TUPLE1, _TUPLE2, _TUPLE3)[len(items)])
        return
    out.append(_MARK)
    for x in items:
        _write(x, out)
    out.append(_TUPLE)


def _global(module: str, name: str) -> bytes:
    return _GLOBAL + f"{module}\n{name}\n".encode("ascii")


def _array(a: np.ndarray, out: list[bytes]) -> None:
    if a.dtype.kind not in "biuf" or a.dtype.byteorder == ">":
        raise TypeError(f"py2pickle writes little-endian numeric arrays, not {a.dtype}")
    a = np.ascontiguousarray(a)
    out.append(_global("numpy.core.multiarray", "_reconstruct"))
    out.append(_global("numpy", "ndarray"))
    out.append(_int(0) + _TUPLE1 + _string(b"b") + _TUPLE3 + _REDUCE)
    # state: (version 1, shape, dtype, is_fortran, raw data as a byte string)
    out.append(_MARK + _int(1))
    _tuple(tuple(int(d) for d in a.shape), out)
    code = f"{a.dtype.kind}{a.dtype.itemsize}".encode("ascii")
    order = b"|" if a.dtype.itemsize == 1 else b"<"
    out.append(_global("numpy", "dtype") + _string(code) + _int(0) + _int(1) + _TUPLE3 + _REDUCE)
    out.append(_MARK + _int(3) + _string(order) + _NONE + _NONE + _NONE + _int(-1) + _int(-1) + _int(0)
               + _TUPLE + _BUILD)
    out.append(_FALSE + _string(a.tobytes()) + _TUPLE + _BUILD)


def _write(obj: Any, out: list[bytes]) -> None:
    if obj is None:
        out.append(_NONE)
    elif obj is True or obj is False:
        out.append(_TRUE if obj else _FALSE)
    elif isinstance(obj, int | np.integer):
        out.append(_int(int(obj)))
    elif isinstance(obj, float | np.floating):
        out.append(_BINFLOAT + struct.pack(">d", float(obj)))
    elif isinstance(obj, str):
        out.append(_string(obj.encode("latin1")))
    elif isinstance(obj, bytes):
        out.append(_string(obj))
    elif isinstance(obj, np.ndarray):
        _array(obj, out)
    elif isinstance(obj, tuple):
        _tuple(obj, out)
    elif isinstance(obj, list):
        out.append(_EMPTY_LIST)
        if obj:
            out.append(_MARK)
            for x in obj:
                _write(x, out)
            out.append(_APPENDS)
    elif isinstance(obj, dict):
        out.append(_EMPTY_DICT)
        if obj:
            out.append(_MARK)
            for k, v in obj.items():
                _write(k, out)
                _write(v, out)
            out.append(_SETITEMS)
    else:
        raise TypeError(f"py2pickle cannot write {type(obj).__name__}")
