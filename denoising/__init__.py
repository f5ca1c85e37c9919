"""Denoising generators (DAE, NCSN, EBM, DDE). Importing this registers their methods."""
from . import method, dde  # noqa: F401, I001  (registers dae, ncsn, ebm and dde, in this order)
