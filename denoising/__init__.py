"""Denoising generators (DAE, NCSN, EBM, DDE). Importing this registers their methods."""
from . import dde, method  # noqa: F401  (registers dae, ncsn, ebm and dde)
