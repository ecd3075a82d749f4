"""Load dataset pickles without letting them run code.

A pickle can name any importable callable (``os.system``, ``subprocess.Popen``...) and have the
unpickler call it. Downloaded dataset files are untrusted, so the unpickler here resolves only the
few globals that numpy arrays, numpy scalars and plain builtins need, and refuses the rest before
anything is called.
"""

from __future__ import annotations

import importlib
import os
import pickle
from typing import Any

from emoexp.data.base import DataError

# Builtin types a data pickle may construct (protocol 0-2 pickles name them through `builtins`,
# or `__builtin__` when written by Python 2).
_BUILTIN_NAMES = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
     "bytearray", "slice", "bool", "range"}
)

# numpy globals an ndarray / scalar / dtype pickle names, mapped to where numpy keeps them now.
# Pickles from numpy 1.x say `numpy.core...`, numpy 2.x writes `numpy._core...`; both resolve to
# the installed module so loading does not touch the deprecated `numpy.core` shim.
_NUMPY_NAMES = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),   # protocol 5 pickles of ndarrays
}


def _numpy_core_attr(submodule: str, name: str) -> Any:
    for package in ("numpy._core", "numpy.core"):
        try:
            module = importlib.import_module(f"{package}.{submodule}")
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"numpy has no {submodule}.{name}")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays, numpy scalars/dtypes and builtin containers."""

    def __init__(self, file: Any, path: str | os.PathLike = "<pickle>"):
        # latin1 lets Python 2 pickles (DEAP) decode their byte strings into numpy buffers.
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        import numpy as np

        if module in ("builtins", "__builtin__") and name in _BUILTIN_NAMES:
            return getattr(__import__("builtins"), name)
        if module == "_codecs" and name == "encode":
            # protocol 2 stores bytes as _codecs.encode(str, 'latin1'); it only re-encodes text
            import _codecs

            return _codecs.encode
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            # numpy 2 may name concrete dtype classes (Float64DType ...); they are inert types
            import numpy.dtypes as npd

            obj = getattr(npd, name, None)
            if isinstance(obj, type):
                return obj
        for package in ("numpy.core.", "numpy._core."):
            if module.startswith(package):
                sub = module[len(package):]
                if (sub, name) in _NUMPY_NAMES:
                    return _numpy_core_attr(sub, name)
        raise DataError(
            self._path,
            f"refuses to unpickle {module}.{name}: pickled datasets may only hold numpy arrays "
            "and builtins",
        )


def load_pickle(path: str | os.PathLike) -> object:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; any failure is a DataError naming it."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(path, f"cannot open: {e.strerror or e}") from e
    with f:
        try:
            return RestrictedUnpickler(f, path).load()
        except DataError:
            raise
        except EOFError as e:
            raise DataError(path, "is truncated or empty: the pickle ends early") from e
        except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, ImportError, UnicodeDecodeError, MemoryError, OverflowError) as e:
            raise DataError(path, f"is not a readable pickle ({type(e).__name__}: {e})") from e
