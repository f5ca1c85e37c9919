"""Where scripts write: one check, before any work, that an output path can be created there.

Every script that writes (run directories, PNG grids, JSON results, classifier files, statistics
caches) checks its outputs with `require_writable` first, so that a typo, a file in the way or a
read-only folder is one line at the start, not a traceback after an hour of training; and writes
them through `atomic_file`, so that a full disk or a kill mid-write never leaves a torn or empty file.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import UserError


def nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (a file or a folder)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def require_writable(path, what: str, folder: bool = False) -> Path:
    """Raise a UserError naming `what` (an option or setting) unless `path` can be written: a file
    (or a folder when `folder`) that can be created or replaced, with no file among its ancestors
    and a writable nearest existing folder. Returns the path."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise UserError(f"{what}: {path} is {kind}; pass {'a folder' if folder else 'a file path'} there")
    parent = path if folder else path.parent
    existing = nearest_existing(parent)
    if not existing.is_dir():
        raise UserError(f"{what}: {existing} is a file, so {path} cannot be created under it; "
                        f"pass a path in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == Path(os.path.abspath(path)) else f", so {path} cannot be written there"
        raise UserError(f"{what}: {existing} is not writable{where}; make it writable or pass a path in a "
                        f"writable folder")
    if path.is_file() and not os.access(path, os.W_OK):
        raise UserError(f"{what}: {path} is read-only; make it writable or pass another path")
    return path


def umask_mode(mode: int = 0o666) -> int:
    """`mode` less the process's umask: what open() would give a new file (0644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


TEMPORARY = ".{name}.*.tmp"  # what atomic_file names its temporary files (a glob, per target name)


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb"):
    """`with atomic_file(path) as f: f.write(...)`: the writes go to a temporary file beside `path`,
    which replaces `path` (fsync, then rename) only when the block ends without an error. On any
    error, a full disk or Ctrl-C included, the temporary file is removed and `path` is as it was, so
    a crash (even SIGKILL, which leaves at most a temporary file) never gives a torn or empty file.
    The file gets the umask's permissions (mkstemp's 0600 would hide it from the group)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a failed write names no file: name the target
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_text_atomic(path, text: str):
    """`path`.write_text(text), atomically (atomic_file)."""
    with atomic_file(path, "w") as f:
        f.write(text)
