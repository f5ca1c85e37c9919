"""Lets `python scripts/x.py` find the project's packages even when it is not pip-installed, and
makes Ctrl-C during the imports (torch takes seconds) one line, not a KeyboardInterrupt traceback."""
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _interrupted(signum, frame):
    # Exit at once rather than raise: an exception raised by a signal handler inside an import can be
    # swallowed (torch's C extension imports numpy and carries on without it if that fails; importlib's
    # lock callbacks print "Exception ignored") and the run would go on, half imported. Nothing has
    # been written yet; `cli` in common/errors.py puts Python's handler back before main() runs.
    print("interrupted", file=sys.stderr, flush=True)
    os._exit(130)


_interrupted.during_imports = True  # what `cli` looks for


def _run_as_script() -> bool:
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return main is not None and Path(main).resolve().parent == ROOT / "scripts"


if _run_as_script() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted)
