"""The command line: a thin layer over the library. `main` parses (`main.py`) and hands each
command to its function: the ones that listen to audio (`fingerprint.py`) and the ones that
change files or read documents without loading JAX (`organize.py`), sharing `output.py`."""

from tagmatch.cli.main import main

__all__ = ["main"]
