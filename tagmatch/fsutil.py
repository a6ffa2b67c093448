"""Atomic writes (a temp file in the target's folder, fsync, then rename over the target: a crash
at any point leaves either the old file or the new one, never half of one), and paths as the
CLI and the TUI show them, and the lock that keeps a second writer off a store or a run."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import joblib


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # mkstemp makes 0600 files; finished files get the usual 0666 & ~umask


def make_folder(folder: Path) -> Path:
    """`mkdir -p folder`, with a one-line TagmatchError when it cannot be (a file in the way, no
    permission, a full disk)."""
    from tagmatch.errors import TagmatchError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        needed = "" if blocker == folder else f" (needed for {folder})"
        raise TagmatchError(f"{blocker} is a file, not a folder{needed}") from None
    except OSError as exc:
        raise TagmatchError(f"cannot make the folder {folder}: {exc.strerror or exc}") from None
    return folder


def check_writable(target: Path) -> Path:
    """Refuse at once, before a long job, an output path that can never be written: a folder,
    or a file under something that is not a folder."""
    from tagmatch.errors import TagmatchError

    target = Path(target)
    if target.is_dir():
        raise TagmatchError(f"{target} is a folder: name a file to write")
    blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise TagmatchError(f"{blocker} is a file, not a folder (needed for {target})")
    return target


def write_failed(target: Path, exc: OSError):
    """The one-line error for a file that could not be written (the old file, if any, is kept)."""
    from tagmatch.errors import TagmatchError

    return TagmatchError(f"cannot write {target}: {exc.strerror or exc}")


@contextmanager
def exclusive(lock_file: Path, what: str):
    """Hold `lock_file` while writing `what`. A second writer, another process or another job of
    this one, is refused at once with one line instead of waiting: it would work from what the
    first is changing. The lock dies with its process, so a crash never leaves one behind."""
    from filelock import FileLock, Timeout

    from tagmatch.errors import TagmatchError

    lock_file = Path(lock_file)
    make_folder(lock_file.parent)
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TagmatchError(f"{what} is being written by another tagmatch (lock {lock_file}); "
                            "let it finish, then try again") from None
    except OSError as exc:
        raise TagmatchError(f"cannot take the lock {lock_file}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()


def store_lock(store_path: Path):
    """The lock a store's writers take (`STORE.lock`, beside the store folder)."""
    store_path = Path(store_path).absolute()
    return exclusive(store_path.with_name(store_path.name + ".lock"), f"the store {store_path}")


def document_lock(path: Path):
    """The lock a scan's or a dupes report's writers take (decide, review, dupes --keep, a scan
    writing it): a review open in one terminal and a `decide` in another would each save over the
    other's decisions. The lock file lives in the user cache dir (named by a hash of the path),
    not beside the document."""
    import hashlib

    from platformdirs import user_cache_dir

    path = Path(os.path.abspath(path))
    key = hashlib.blake2b(os.fsencode(path), digest_size=10).hexdigest()
    return exclusive(Path(user_cache_dir("tagmatch")) / "locks" / f"{key}.lock", str(path))


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (new, renamed, removed files) durable; best effort where the OS
    cannot open folders."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: Path):
    """Yield a temp path beside `target`; on success it replaces `target` atomically. A write
    that fails (a full disk, no permission, `target` a folder) raises a one-line TagmatchError
    and leaves `target` as it was."""
    make_folder(check_writable(target).parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise write_failed(target, exc) from None
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise write_failed(target, exc) from None
        raise


def atomic_joblib_dump(obj, target: Path, compress: int = 0) -> None:
    with atomic_path(target) as tmp:
        joblib.dump(obj, tmp, compress=compress)


def json_text(obj, indent: int | None = None) -> str:
    """`obj` as JSON with non-ASCII characters as they are, except lone surrogates: a file name
    that is not valid UTF-8 reaches Python with its odd bytes as surrogates (U+DC80-U+DCFF), which
    UTF-8 cannot encode. They are written as JSON's `\\udcXX` escapes, so the document stays
    valid UTF-8 and reads back to the same name, and so to the same bytes on disk."""
    import json

    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogates occur only inside strings, where \udcXX means the same
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def atomic_write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: Path | str):
    """A JSON file's content; unreadable or malformed files raise TagmatchError with one line."""
    import json

    from tagmatch.errors import TagmatchError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TagmatchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise TagmatchError(f"{path} is not JSON: {exc}") from exc


def rel(path: str | Path, base: Path | None) -> str:
    """A path as the user knows it: relative to `base` when under it (also keeps temp folders'
    names off the screen), else as given."""
    if base is None:
        return str(path)
    try:
        return str(Path(path).absolute().relative_to(Path(base).absolute()))
    except ValueError:
        return str(path)


def common_folder(paths: list[str]) -> Path | None:
    """The folder all these files share (the scanned folder, give or take); None for no files."""
    dirs = [os.path.dirname(os.path.abspath(p)) for p in paths]
    return Path(os.path.commonpath(dirs)) if dirs else None


def document_version(doc: dict, source: str, kind: str, newest: int, again: str) -> int:
    """A parsed document's version, checked: present, one tagmatch wrote, and not newer than
    `newest` (else a one-line TagmatchError that says to upgrade or to `again`)."""
    from tagmatch.errors import TagmatchError

    version = doc.get("version")
    if version is None:
        raise TagmatchError(f"{source} is not a tagmatch {kind} (no 'version')")
    if not isinstance(version, int) or version < 1:
        raise TagmatchError(f"{source}: {kind} version {version!r} is not a version tagmatch wrote")
    if version > newest:
        raise TagmatchError(f"{source}: {kind} version {version} is newer than this tagmatch reads "
                            f"({newest}): upgrade tagmatch or {again}")
    return version
