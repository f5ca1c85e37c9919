"""The bottom layer, importing nothing of the project: errors, typed config, the registry,
checkpoint I/O, paths, signals, initialisation, smoothed metrics, spectral norm, stop-gradients,
CUDA-graph helpers, and the Method base class with its EMA."""
