"""Reading joblib files (stores, shards, models, checkpoints) without ever running code from them.

A joblib file is a pickle, and a pickle can name any function to call while it loads: a store
folder or a `--model` file from someone else could run any command. Ours hold only plain
containers, strings, numbers and numpy arrays, so the unpickler here resolves only what those
need (numpy's array and dtype reconstruction, joblib's array wrapper) and refuses every other
name, and refuses arrays of Python objects (joblib reads those with an unrestricted pickle).
Memory-mapping and compression work as in `joblib.load`.

It subclasses joblib's own unpickler (`joblib.numpy_pickle.NumpyUnpickler`, joblib >= 1.5), the
one place that knows joblib's container format; tests/hostile/test_code_execution.py holds it to that.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from tagmatch.errors import TagmatchError

# (module, name) pairs a file of ours may name. numpy moved its core to numpy._core in 2.0; a file
# written by either numpy names one or the other.
ALLOWED = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "bytearray"),
    ("collections", "OrderedDict"), ("_codecs", "encode"),
})


class UnsafeFile(TagmatchError):
    """A joblib file that asks for more than data: refused before anything of it runs."""


def _unpickler_class():
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    class DataOnlyUnpickler(NumpyUnpickler):
        dispatch = NumpyUnpickler.dispatch.copy()

        def find_class(self, module: str, name: str):
            if (module, name) not in ALLOWED:
                raise UnsafeFile(f"{self.filename}: refused, it asks to load {module}.{name} "
                                 "(a tagmatch file holds only data)")
            return super().find_class(module, name)

        def load_build(self):
            state, obj = self.stack[-1], self.stack[-2]
            if isinstance(obj, NumpyArrayWrapper) and getattr(state.get("dtype"), "hasobject", True):
                raise UnsafeFile(f"{self.filename}: refused, it holds an array of Python objects "
                                 "(a tagmatch file holds only plain arrays)")
            NumpyUnpickler.load_build(self)

        dispatch[pickle.BUILD[0]] = load_build

    return DataOnlyUnpickler


_CLASS = None


def load(path: Path | str, mmap_mode: str | None = None):
    """What `joblib.load(path, mmap_mode)` returns, for files that hold only data; anything else
    raises UnsafeFile (a TagmatchError: one line naming the file) before it can run."""
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    global _CLASS
    if _CLASS is None:
        _CLASS = _unpickler_class()
    filename = os.fspath(path)
    with open(filename, "rb") as f:
        with _validate_fileobject_and_memmap(f, filename, mmap_mode) as (fobj, mode):
            if isinstance(fobj, str):  # joblib < 0.10's format: companion files, never ours
                raise UnsafeFile(f"{filename}: refused, a joblib format older than tagmatch")
            return _CLASS(filename, fobj, mmap_mode is None, mmap_mode=mode).load()
