"""The terminal UI (Textual): review a scan, apply it, undo runs. A front end only: every action
calls the same library functions as the CLI (plan.py, apply.py, journal.py)."""
