"""Denoising generators (DAE, NCSN, EBM, DDE). Importing this registers their methods."""
