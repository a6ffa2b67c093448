"""A damaged store is never searched as if it were whole: flipped bits in a shard's track numbers
or times are refused at every open with one line naming the shard, flipped vector bits by
`tagmatch check` and `tagmatch index`, and `tagmatch index` repairs the shard by embedding its
tracks again, after which the scan's answers are what they were."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tagmatch import safeload
from tagmatch.cli import main
from tagmatch.errors import StoreError
from tagmatch.store.folder import MANIFEST
from tagmatch.store.shards import Store


def _flip_a_bit(shard: Path, array: str) -> None:
    """Flip one bit in the middle of one of the shard file's arrays, as a bad disk would."""
    raw = bytearray(shard.read_bytes())
    needle = safeload.load(shard)[array].tobytes()
    at = bytes(raw).find(needle)
    assert at >= 0
    raw[at + len(needle) // 2] ^= 0x04
    shard.write_bytes(bytes(raw))


@pytest.fixture
def store_copy(library_store, tmp_path) -> Path:
    _, path = library_store
    mine = tmp_path / "store"
    shutil.copytree(path, mine)
    return mine


def _shards(store: Path) -> list[str]:
    return [s["file"] for s in json.loads((store / MANIFEST).read_text())["shards"]]


def _scan(folder: Path, store: Path, out: Path) -> dict:
    assert main(["scan", str(folder), "--store", str(store), "--json", str(out), "-q"]) == 0
    return {f["path"]: (f["status"], (f["match"] or {}).get("path"), round((f["match"] or {}).get("confidence", 0), 6))
            for f in json.loads(out.read_text(encoding="utf-8"))["files"]}


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("array", ["track", "time"])
def test_a_flipped_bit_in_track_numbers_or_times_is_refused_at_open(store_copy, fixture_dir, tmp_path, capsys,
                                                                    array):
    shard = _shards(store_copy)[0]
    _flip_a_bit(store_copy / shard, array)
    with pytest.raises(StoreError, match=f"shard {shard} is damaged"):
        Store.load(store_copy)
    for args in (["scan", str(fixture_dir / "messy"), "--json", str(tmp_path / "s.json")], ["info"]):
        assert main([*args, "--store", str(store_copy)]) == 1
        line = _error_line(capsys)
        assert f"shard {shard} is damaged" in line and "tagmatch index" in line
    assert not (tmp_path / "s.json").exists()


def test_check_finds_flipped_vector_bits_and_index_repairs_them(store_copy, library_store, fixture_dir, tmp_path,
                                                                capsys):
    before = _scan(fixture_dir / "messy", library_store[1], tmp_path / "before.json")
    shard = _shards(store_copy)[-1]
    _flip_a_bit(store_copy / shard, "vectors")
    Store.load(store_copy)  # an open checks the track numbers and times only
    damaged: list = []
    Store.load(store_copy, verify="full", damaged=damaged)
    assert [(f, why) for f, why, _ in damaged] == [(shard, "is damaged (the checksum of its vectors differs)")]

    assert main(["check", "--store", str(store_copy)]) == 1
    printed = capsys.readouterr()
    assert f"shard {shard} is damaged" in printed.err and "1 damaged shard" in printed.out

    assert main(["index", str(fixture_dir / "library"), "--store", str(store_copy), "-q", "--check"]) == 0
    printed = capsys.readouterr()
    n = len(damaged[0][2])
    assert f"repaired: shard {shard} is damaged" in printed.err and f"{n} of them embedded again" in printed.err
    assert main(["check", "--store", str(store_copy)]) == 0
    assert "every checksum matches" in capsys.readouterr().out
    assert shard not in _shards(store_copy) and not (store_copy / shard).exists()
    assert _scan(fixture_dir / "messy", store_copy, tmp_path / "after.json") == before


def test_a_missing_shard_is_named_and_repaired(store_copy, fixture_dir, capsys):
    shard = _shards(store_copy)[0]
    (store_copy / shard).unlink()
    assert main(["info", "--store", str(store_copy)]) == 1
    assert f"shard {shard} is missing or unreadable" in _error_line(capsys)
    assert main(["index", str(fixture_dir / "library"), "--store", str(store_copy), "-q"]) == 0
    assert main(["check", "--store", str(store_copy)]) == 0


def test_a_damaged_track_list_is_refused_and_index_embeds_its_tracks_again(store_copy, fixture_dir, capsys):
    manifest = json.loads((store_copy / MANIFEST).read_text())
    table = store_copy / manifest["shards"][0]["tracks"]
    raw = bytearray(table.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    table.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=f"shard {manifest['shards'][0]['file']} has a damaged track list {table.name}"):
        Store.load(store_copy)
    assert main(["index", str(fixture_dir / "library"), "--store", str(store_copy), "-q"]) == 0
    assert len(Store.load(store_copy).tracks) == manifest["n_tracks"]


def test_a_store_saved_without_checksums_opens_and_gets_them_at_the_next_index(store_copy, fixture_dir, capsys):
    manifest = json.loads((store_copy / MANIFEST).read_text())
    for s in manifest["shards"]:
        del s["crc32"]
        del s["tracks_crc32"]
    (store_copy / MANIFEST).write_text(json.dumps(manifest))
    Store.load(store_copy)
    assert main(["check", "--store", str(store_copy)]) == 0
    assert "saved without checksums" in capsys.readouterr().out
    assert main(["index", str(fixture_dir / "library"), "--store", str(store_copy), "-q"]) == 0
    assert all("crc32" in s for s in json.loads((store_copy / MANIFEST).read_text())["shards"])


def test_index_reads_the_vectors_only_where_it_copies_them_and_then_checks_them(store_copy, fixture_dir,
                                                                             capsys, monkeypatch):
    """Within a week of the last full check, `index` opens a store as every open does (it costs
    what changed, not a pass over every vector); damaged vectors it would copy into a new shard
    (a removed track's shard is rewritten) are refused with one line, never written again."""
    import time

    from tagmatch import jobs

    assert main(["index", str(fixture_dir / "library"), "--store", str(store_copy), "-q"]) == 0  # a full check
    assert time.time() - json.loads((store_copy / MANIFEST).read_text())["vectors_checked_at"] < 600
    shard = _shards(store_copy)[-1]
    _flip_a_bit(store_copy / shard, "vectors")
    assert main(["index", str(fixture_dir / "library"), "--store", str(store_copy), "-q"]) == 0
    capsys.readouterr()
    assert shard in _shards(store_copy)  # not read, so not repaired: `check` finds it
    assert main(["check", "--store", str(store_copy)]) == 1
    assert "--check" in capsys.readouterr().out
    store = Store.load(store_copy)
    with pytest.raises(StoreError, match=f"shard {shard} is damaged .* --check"):
        store.remove_tracks({len(store.tracks) - 1})  # its shard would be rewritten
    # a week after the last full check, index checks every vector again, and repairs
    monkeypatch.setattr(jobs.time, "time", lambda: json.loads((store_copy / MANIFEST).read_text())
                        ["vectors_checked_at"] + jobs.FULL_CHECK_EVERY_S + 1)
    assert main(["index", str(fixture_dir / "library"), "--store", str(store_copy), "-q"]) == 0
    assert "repaired" in capsys.readouterr().err and shard not in _shards(store_copy)
