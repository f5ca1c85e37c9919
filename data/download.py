"""Downloads through torchvision, made safe to fail: offline or interrupted, a download leaves no
empty or half-filled folders behind and fails with one line saying where to put the files."""
from __future__ import annotations

import shutil
from pathlib import Path

from common.errors import DataError
from common.paths import nearest_existing


def _tree(folder: Path) -> set[Path]:
    return set(folder.rglob("*")) if folder.is_dir() else set()


def _remove_new(root: Path, existed: Path, before: set[Path]):
    """Delete what appeared under `root` since `before`; when `root` itself is new, the highest
    folder created on the way to it (`existed` is the nearest folder that was there)."""
    if existed != root:
        created = root
        while created.parent != existed:
            created = created.parent
        shutil.rmtree(created, ignore_errors=True)
        return
    for path in sorted(_tree(root) - before, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def download(what: str, root, fetch, manual: str):
    """Run `fetch()` (a torchvision download into `root`); on any failure remove what it created
    and raise one DataError naming `what`, the cause and `manual` (where to put the files)."""
    root = Path(root).absolute()
    existed = nearest_existing(root)
    before = _tree(root) if existed == root else set()
    try:
        fetch()
    except BaseException as e:
        _remove_new(root, existed, before)
        if not isinstance(e, Exception):
            raise  # Ctrl-C: cleaned up, still an interruption
        # torchvision's message spans lines ("Error downloading x:", "Tried URL, got:", the cause)
        reason = " ".join(str(getattr(e, "reason", None) or e).split())[:200] or type(e).__name__
        raise DataError(f"could not download {what} into {root} ({reason}): check the network, or "
                        f"{manual}") from None
