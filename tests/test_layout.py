"""The layering is a contract: import-linter checks pyproject.toml's contracts (layers from the CLI
down to audio, no cycles, Textual only in the TUI, no JAX under organize), and the commands that
only read documents or change files run without loading JAX (seconds saved on every undo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


# Each runs in a fresh interpreter and prints whether JAX (or flax/optax) got imported.
PROBE = """
import sys
from tagmatch.cli import main
try:
    rc = main({argv!r})
except SystemExit as exc:  # --help exits
    rc = exc.code
print("LOADED", sorted(m for m in ("jax", "flax", "optax") if m in sys.modules), rc)
"""


def _loaded(argv: list[str], env: dict) -> tuple[list[str], str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True,
                         env=env, timeout=120, cwd=ROOT)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("LOADED")), None)
    assert line is not None, out.stdout[-2000:] + out.stderr[-2000:]
    return line, out.stdout


@pytest.mark.parametrize("argv", [["undo", "--help"], ["runs"], ["apply", "--help"], ["review", "--help"],
                                  ["decide", "--help"], ["keys"]])
def test_commands_that_only_change_files_never_import_jax(argv, tmp_path):
    env = {**os.environ, "TAGMATCH_RUNS": str(tmp_path / "runs")}
    line, _ = _loaded(argv, env)
    assert line.startswith("LOADED []"), line


def test_apply_and_decide_on_a_scan_never_import_jax(tmp_path, manifest_scan_path):
    """A dry-run apply and a decision on a real scan document: no JAX either."""
    scan = manifest_scan_path
    env = {**os.environ, "TAGMATCH_RUNS": str(tmp_path / "runs")}
    line, out = _loaded(["apply", str(scan), "--min-confidence", "0.9", "--dest", str(tmp_path / "out")], env)
    assert line == "LOADED [] 0", line
    assert "\n  -> " in out  # the plan was printed
    first = json.loads(scan.read_text())["files"][0]["path"]
    line, _ = _loaded(["decide", str(scan), first, "--reject"], env)
    assert line == "LOADED [] 0", line


def test_opening_the_review_never_imports_jax():
    probe = ("import sys; import tagmatch.tui.app, tagmatch.tui.review, tagmatch.tui.dupes, tagmatch.tui.runs; "
             "print(sorted(m for m in ('jax', 'flax', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
