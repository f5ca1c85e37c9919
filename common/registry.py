"""One registry: the names a config may give (method, architecture, loss, sampler, σ sampling, data
set) and the code each one names. A part registers itself where it is defined,

    @register("sampler", "heun")
    def heun_sampler(denoiser, x, settings, generator=None, progress=False): ...

and the config's allowed values, its "must be one of" message and its did-you-mean come from here
(common/schema.py `Registered`), so adding a part touches no switch statement and no list of names.
Keyword arguments of `register` become attributes of the registered object (what the rest of the
code may ask of it, e.g. `points=True` for an architecture that takes 2-D points).

This module imports nothing of the project but its errors: the registries fill as the packages that
define the parts are imported (`import engine` imports them all).
"""
from __future__ import annotations

from .errors import ConfigError, did_you_mean

# kind → what one of them is called in messages
KINDS = {
    "method": "method",
    "gan_arch": "GAN architecture",
    "denoiser_arch": "denoiser architecture",
    "gan_loss": "GAN loss",
    "sampler": "sampler",
    "sigma_sampling": "training σ distribution",
    "dataset": "data set",
    "lr_schedule": "learning-rate schedule",
    "gan_step": "GAN training step",
    "gan_reg": "critic regulariser",
    "gan_augment": "critic augmentation",
    "dsm_weighting": "DSM weighting",
    "init_scheme": "initialisation scheme",
    "generator_arch": "generator architecture",
}
_TABLES: dict[str, dict[str, object]] = {kind: {} for kind in KINDS}


def _table(kind: str) -> dict[str, object]:
    if kind not in _TABLES:
        raise KeyError(f"no registry kind {kind!r} (kinds: {', '.join(KINDS)})")
    return _TABLES[kind]


def _same_definition(a, b) -> bool:
    """A module imported again (importlib.reload) registers a new object for the same code."""
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == \
        (getattr(b, "__module__", None), getattr(b, "__qualname__", None))


def register(kind: str, name: str, **attrs):
    """Decorator: make `obj` the `kind` called `name`; sets obj.name = name and the given attributes."""
    table = _table(kind)

    def decorator(obj):
        if name in table and not _same_definition(table[name], obj):
            raise ValueError(f"{KINDS[kind]} {name!r} is registered twice ({table[name]!r} and {obj!r})")
        for key, value in {"name": name, **attrs}.items():
            setattr(obj, key, value)
        table[name] = obj
        return obj
    return decorator


def unregister(kind: str, name: str):
    """Forget a registration (a test's throw-away part)."""
    _table(kind).pop(name, None)


def names(kind: str) -> tuple[str, ...]:
    """The registered names of a kind, in registration order."""
    return tuple(_table(kind))


def lookup(kind: str, name, key: str | None = None):
    """The `kind` registered as `name`; else one ConfigError line naming the setting `key` (default:
    the kind), the registered names and the closest one."""
    table = _table(kind)
    if not isinstance(name, str):
        raise ConfigError(f"{key or kind}: expected the name of a {KINDS[kind]}, got {name!r} (registered: "
                          f"{', '.join(table)})")
    if name not in table:
        hint = did_you_mean(name, table)
        known = ", ".join(table) if table else "none: import engine first, which registers every part"
        raise ConfigError(f"{key or kind}: unknown {KINDS[kind]} {name!r}{hint} (registered: {known})")
    return table[name]
