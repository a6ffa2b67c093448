"""tagmatch.safeload: joblib files load as `joblib.load` loads them, and nothing in them runs."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import joblib
import numpy as np
import pytest

from tagmatch import safeload
from tagmatch.safeload import UnsafeFile


class _RunsACommand:
    """What a hostile file holds: an object whose unpickling calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _data() -> dict:
    rng = np.random.default_rng(0)
    return {
        "format": "x", "version": 3, "ok": True, "none": None, "pi": 3.25, "big": 2**70,
        "text": "Motörhead – ♠", "bytes": b"\x00\xff", "tuple": (1, "a"), "set": {1, 2},
        "frozen": frozenset({"a"}), "complex": 1 + 2j, "ordered": OrderedDict(a=1),
        "f32": rng.normal(size=(7, 5)).astype(np.float32), "f16": np.ones(3, np.float16),
        "i64": np.arange(10), "u8": np.zeros((0, 4), np.uint8), "scalar": np.float32(1.5),
        "strings": np.array(["a", "bcd"]), "structured": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
        "fortran": np.asfortranarray(rng.normal(size=(3, 4))),
        "nested": {"params": {"w": rng.normal(size=(2, 2)), "list": [np.int32(4), [np.arange(3)]]}},
    }


def _same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("compress", [0, 3])
def test_data_loads_as_joblib_loads_it(tmp_path, compress):
    path = tmp_path / "d.joblib"
    joblib.dump(_data(), path, compress=compress)
    _same(safeload.load(path), joblib.load(path))
    _same(safeload.load(path), _data())


def test_memory_mapped_arrays_stay_on_disk(tmp_path):
    path = tmp_path / "d.joblib"
    joblib.dump({"v": np.arange(12, dtype=np.float32).reshape(3, 4)}, path)
    v = safeload.load(path, mmap_mode="r")["v"]
    assert isinstance(v, np.memmap) and not v.flags.writeable
    np.testing.assert_array_equal(v, np.arange(12).reshape(3, 4))


@pytest.mark.parametrize("compress", [0, 3])
def test_a_file_that_would_run_a_command_is_refused_before_it_runs(tmp_path, compress):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.joblib"
    joblib.dump({"vectors": np.zeros(3), "x": _RunsACommand(marker)}, path, compress=compress)
    with pytest.raises(UnsafeFile, match=r"evil\.joblib: refused, it asks to load posix\.system"):
        safeload.load(path)
    assert not marker.exists()


def test_a_plain_pickle_naming_a_builtin_callable_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"a": getattr}))
    with pytest.raises(UnsafeFile, match="builtins.getattr"):
        safeload.load(path)


def test_an_array_of_python_objects_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "objects.joblib"
    joblib.dump({"a": np.array([1, _RunsACommand(marker)], dtype=object)}, path)
    with pytest.raises(UnsafeFile, match="array of Python objects"):
        safeload.load(path)
    assert not marker.exists()


def test_a_mangled_file_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "cut.joblib"
    joblib.dump(_data(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(Exception) as info:
        safeload.load(path)
    assert not isinstance(info.value, (SystemExit, KeyboardInterrupt))


def _hostile_store(store_dir: Path, marker: Path) -> None:
    """Swap a store's shard for one that runs a command when unpickled (and drop its checksums
    from the manifest, as whoever crafts the file would). The track lists are JSON."""
    import json

    manifest = json.loads((store_dir / "manifest.json").read_text())
    shard = manifest["shards"][0]
    joblib.dump({"vectors": _RunsACommand(marker), "track": [], "time": []}, store_dir / shard["file"])
    del shard["crc32"]
    (store_dir / "manifest.json").write_text(json.dumps(manifest))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tagmatch", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_refuses_a_hostile_store_with_one_line(tmp_path, library_store):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(library_store[1], store)
    marker = tmp_path / "ran"
    _hostile_store(store, marker)
    r = _run("info", "--store", str(store))
    assert r.returncode != 0 and not marker.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_cli_refuses_a_hostile_model_with_one_line(tmp_path, library_store):
    marker = tmp_path / "ran"
    model = tmp_path / "model.joblib"
    joblib.dump({"format": "tagmatch-model", "x": _RunsACommand(marker)}, model)
    r = _run("info", "--store", str(library_store[1]), "--model", str(model))
    assert r.returncode != 0 and not marker.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused" in lines[0] and "Traceback" not in r.stderr, r.stderr
