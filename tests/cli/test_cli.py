"""The command line as a user runs it: real subprocesses on the generated fixtures."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def run(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "tagmatch", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def tree_hashes(root: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cli_run(fixture_dir, tmp_path_factory):
    """index + scan --json through the CLI, with file hashes before and after."""
    tmp = tmp_path_factory.mktemp("cli")
    store, out = tmp / "store", tmp / "scan.json"
    before = {**tree_hashes(fixture_dir / "library"), **tree_hashes(fixture_dir / "messy")}
    idx = run("index", fixture_dir / "library", "--store", store, "--quiet")
    scan = run("scan", fixture_dir / "messy", "--store", store, "--json", out, "--quiet")
    after = {**tree_hashes(fixture_dir / "library"), **tree_hashes(fixture_dir / "messy")}
    return {"store": store, "json": json.loads(out.read_text()), "index": idx, "scan": scan,
            "before": before, "after": after}


def test_index_and_scan_leave_every_input_file_untouched(cli_run):
    assert cli_run["before"] == cli_run["after"]


def test_scan_prints_one_line_per_file(cli_run, manifest):
    lines = cli_run["scan"].stdout.strip().splitlines()
    assert len(lines) == len(manifest["messy"])
    for e in manifest["messy"]:
        name = e["path"].split("/", 1)[1]
        (line,) = [l for l in lines if l.startswith(name + " ")]
        if e["expect"] == "match":
            ref = next(x for x in manifest["library"] if x["path"] == e["reference"])
            assert f"{ref['artist']} - {ref['title']}" in line
        else:
            assert e["expect"] in line  # "unknown" or "error"
    assert "Traceback" not in cli_run["scan"].stderr


def test_unsure_answers_are_checked_against_the_references_unless_told_not_to(cli_run, fixture_dir, tmp_path):
    doc = cli_run["json"]
    unsure = [f for f in doc["files"] if f["status"] == "unknown" and f["match"]]
    assert unsure and all(f["match"]["verified"] is not None for f in unsure)
    assert all(f["match"]["verified"] < 0.2 for f in unsure)  # songs not in the library: their audio is not there
    out = tmp_path / "plain.json"
    run("scan", fixture_dir / "messy", "--store", cli_run["store"], "--json", out, "--quiet", "--no-verify")
    plain = json.loads(out.read_text())
    assert [f["status"] for f in plain["files"]] == [f["status"] for f in doc["files"]]
    assert all(c["verified"] is None for f in plain["files"] for c in [f["match"] or {"verified": None}, *f["alternatives"]])


def test_json_contract(cli_run, manifest, fixture_dir):
    doc = cli_run["json"]
    assert doc["version"] == 2 and doc["store"] == str(cli_run["store"])
    assert len(doc["files"]) == len(manifest["messy"])
    expected = {str((fixture_dir / e["path"]).absolute()): e for e in manifest["messy"]}
    for f in doc["files"]:
        e = expected[f["path"]]
        assert set(f) >= {"path", "status", "error", "match", "alternatives", "seen"}
        if f["seen"] is not None:  # what the scan saw (None: the file could not be opened)
            assert f["seen"]["size"] == Path(f["path"]).stat().st_size
        assert f["status"] == e["expect"]
        if f["status"] == "error":
            assert f["error"] and f["match"] is None
            continue
        assert f["error"] is None
        for c in [f["match"], *f["alternatives"]]:
            assert set(c) >= {"path", "tags", "confidence", "offset_s", "fragments_agreeing", "fragments_total"}
            assert set(c["tags"]) >= {"title", "artist", "album", "tracknumber"}
            assert 0.0 <= c["confidence"] <= 1.0 and os.path.isabs(c["path"])
        if e["expect"] == "match":
            assert f["match"]["path"] == str((fixture_dir / e["reference"]).absolute())
            assert f["match"]["confidence"] >= 0.5


def test_reindex_is_incremental(cli_run, fixture_dir):
    again = run("index", fixture_dir / "library", "--store", cli_run["store"], "--quiet")
    assert "added 0, updated 0, removed 0" in again.stdout


def test_errors_are_one_clear_line_without_traceback(tmp_path, cli_run, fixture_dir):
    missing = run("scan", fixture_dir / "messy", "--store", tmp_path / "none.joblib", check=False)
    assert missing.returncode == 1 and "tagmatch index" in missing.stderr and "Traceback" not in missing.stderr
    corrupt = tmp_path / "corrupt.joblib"
    corrupt.write_bytes(b"\x00garbage")
    bad = run("scan", fixture_dir / "messy", "--store", corrupt, check=False)
    assert bad.returncode == 1 and "corrupt" in bad.stderr and "Traceback" not in bad.stderr
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "empty.mp3").write_bytes(b"")
    (only_bad / "text.ogg").write_text("hello")
    nothing = run("scan", only_bad, "--store", cli_run["store"], "--quiet", check=False)
    assert nothing.returncode == 1  # nothing could be processed
    assert nothing.stdout.count("error:") == 2


def test_store_built_with_another_model_is_refused(tmp_path, cli_run, fixture_dir):
    """A model with other weights (one training step) must not read this store."""
    other = tmp_path / "other.joblib"
    trained = run("train", fixture_dir / "library", "--out", other, "--steps", "1", "--batch", "4",
                  "--adapter-pairs", "0", "--quiet")
    assert "no query adapter" in trained.stdout
    proc = run("scan", fixture_dir / "messy", "--store", cli_run["store"], "--model", other, check=False)
    assert proc.returncode == 1 and "model" in proc.stderr and "Traceback" not in proc.stderr


def test_index_keeps_an_approximate_index_on_request_and_scans_use_it(cli_run, fixture_dir, tmp_path):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(cli_run["store"], store)
    idx = run("index", fixture_dir / "library", "--store", store, "--search", "approximate", "--quiet")
    assert "search: approximate (IVF" in idx.stdout and "index built" in idx.stdout
    assert "search  approximate (IVF" in run("info", "--store", store).stdout
    out = tmp_path / "scan.json"
    scan = run("scan", fixture_dir / "messy", "--store", store, "--json", out, "--quiet")
    assert "search exact" not in scan.stderr

    def tops(doc):
        return {f["path"]: (f["status"], (f.get("match") or {}).get("path")) for f in doc["files"]}

    assert tops(json.loads(out.read_text())) == tops(cli_run["json"])  # same answers as exact search
    again = run("index", fixture_dir / "library", "--store", store, "--quiet")  # auto keeps it
    assert "index current" in again.stdout
    exact = run("index", fixture_dir / "library", "--store", store, "--search", "exact", "--quiet")
    assert "search: exact" in exact.stdout and not list(store.glob("ann-ivfpq*"))
    assert "search  exact" in run("info", "--store", store).stdout


def test_a_shared_kind_model_trains_indexes_and_scans_from_the_cli(tmp_path, fixture_dir, manifest):
    """`train --kind shared` makes a model, with a query adapter fitted after training, whose store
    and scan run through the shared paths (whole tracks in one pass, queries on four phases, the
    adapter on the query side) on the real fixture files."""
    from tagmatch.model.modelfile import load_model

    model, store, out = tmp_path / "shared.joblib", tmp_path / "store", tmp_path / "scan.json"
    trained = run("train", fixture_dir / "library", "--out", model, "--steps", "2", "--batch", "4",
                  "--kind", "shared", "--adapter-pairs", "300", "--quiet")
    assert "2 steps" in trained.stdout and "query adapter fitted on 300 pairs" in trained.stdout
    assert load_model(model).query_adapter["W1"].shape[0] == load_model(model).dim
    run("index", fixture_dir / "library", "--store", store, "--model", model, "--quiet")
    scan = run("scan", fixture_dir / "messy", "--store", store, "--model", model, "--json", out, "--quiet",
               check=False)
    assert scan.returncode in (0, 1) and "Traceback" not in scan.stderr, scan.stderr
    files = json.loads(out.read_text())["files"]
    assert len(files) == len(list((fixture_dir / "messy").rglob("*.*")))
    decodable = sum(e["expect"] != "error" for e in manifest["messy"])
    assert sum(f["status"] != "error" for f in files) == decodable  # each one matched or not
