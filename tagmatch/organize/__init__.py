"""Changing files, with nothing lost: tags read and written per format (`tags`), names from a
template (`naming`), a scan's decisions turned into a plan (`plan`), the journaled apply and undo
(`apply`, `journal`). This package needs no JAX: it works from documents and files alone."""
