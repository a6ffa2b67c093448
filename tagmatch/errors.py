"""One small error hierarchy: batch loops catch `TagmatchError` per file and go on."""

from __future__ import annotations


class TagmatchError(Exception):
    """Base of every error tagmatch reports to the user as one line."""


class FileError(TagmatchError):
    """An error about one file: `path` names it, `reason` is the one-line message."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(reason)


class AudioReadError(FileError):
    """A file could not be decoded, or holds no usable audio."""


class StoreError(TagmatchError):
    """The embedding store is missing, corrupt, or was built with another model or config."""


class SearchLost(StoreError):
    """The search workers cannot answer (the cluster went away, or holds another store version):
    a scan stops, keeping the files done, rather than failing every file after it."""


class ModelError(TagmatchError):
    """A model file is missing, corrupt, or of an unknown format."""


class TagReadError(FileError):
    """A file's tags could not be read (not audio, corrupt, unreadable)."""


class TagWriteError(FileError):
    """A file's tags could not be written or did not read back as written; the file is unchanged."""
