"""Lets `python scripts/x.py` find the project's packages even when it is not pip-installed, and
makes Ctrl-C during the imports (torch takes seconds) one line, not a KeyboardInterrupt traceback."""
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _interrupted(signum, frame):
    # SystemExit unwinds the import quietly; `cli` in common/errors.py takes over once main() runs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("interrupted", file=sys.stderr)
    raise SystemExit(130)


def _run_as_script() -> bool:
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return main is not None and Path(main).resolve().parent == ROOT / "scripts"


if _run_as_script() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted)
