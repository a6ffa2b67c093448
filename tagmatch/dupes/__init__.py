"""Duplicate recordings in a folder: candidate pairs and their alignment (`find`), which copy to
keep (`keeper`), the report document (`report`) and moving the extra copies aside (`quarantine`)."""
