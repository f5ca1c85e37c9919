"""GANs: one-loss (synchronous) and alternating training. Importing this registers `method: gan`."""
from . import method  # noqa: F401  (registers the method)
