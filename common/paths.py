"""Where scripts write: one check, before any work, that an output path can be created there.

Every script that writes (run directories, PNG grids, JSON results, classifier files, statistics
caches) checks its outputs with `require_writable` first, so that a typo, a file in the way or a
read-only folder is one line at the start, not a traceback after an hour of training.
"""
from __future__ import annotations

import os
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
