"""Config string → method class. Adding a method is a decorator, never a switch statement."""
import importlib

from .errors import ConfigError

METHODS: dict = {}
FAMILIES = ("gan", "denoising")  # packages whose import registers their methods


def register_method(name: str):
    def decorator(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return decorator


def get_method(name):
    for family in FAMILIES:
        importlib.import_module(family)
    if name not in METHODS:
        from .config import did_you_mean
        raise ConfigError(f"method: unknown method {name!r}" + did_you_mean(name, METHODS)
                          + f" (registered: {', '.join(sorted(METHODS))})")
    return METHODS[name]
