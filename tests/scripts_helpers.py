"""Import the scripts' helpers in tests (scripts/ is not a package)."""
from sample import load_method  # noqa: F401
