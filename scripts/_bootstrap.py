"""Lets `python scripts/x.py` find the project's packages even when it is not pip-installed."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
