"""Typed settings: dataclasses checked against raw YAML values, one line per problem.

`parse(cls, raw, path)` builds dataclass `cls` from a mapping, checking keys and types recursively
and raising a one-line ConfigError that names the dotted key (with the closest valid key when there
is one), then runs the dataclass's own `check(path)`. A field whose value names a registered part
is annotated `one_of(kind)`: its allowed values, its "must be one of" message and its did-you-mean
come from the registry (common/registry.py), never from a list written beside it. A section that names
a registered part and holds that part's own settings (`sampler: {name: edm, churn: 10}`, or just
`sampler: edm`) is annotated `choice_of(kind)`: it is checked against the dataclass the part was
registered with (`settings=`), so a new part brings its settings with it.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from .errors import ConfigError, did_you_mean
from .registry import lookup, names


@dataclass(frozen=True)
class Registered:
    """Annotated[str, Registered(kind)]: the name of a part registered under `kind`."""
    kind: str

    def check(self, value: str, path: str) -> str:
        allowed = names(self.kind)
        if value not in allowed:
            raise ConfigError(f"{path}: must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}"
                              + did_you_mean(value, allowed))
        return value


def one_of(kind: str):
    """The annotation of a setting that names a registered `kind` (e.g. `sampler: one_of("sampler")`)."""
    return Annotated[str, Registered(kind)]


@dataclass(frozen=True)
class Chosen:
    """Annotated[Any, Chosen(kind, base)]: a mapping {name: <a registered `kind`>, <its settings>...},
    or the name alone for its default settings, parsed into the dataclass the part was registered
    with (`settings=`, a subclass of `base`; `base` itself for a part registered without)."""
    kind: str
    base: type

    def parse(self, value, path: str):
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or "name" not in value:
            raise ConfigError(f"{path}: expected a name or a mapping with 'name:' (e.g. {path}=NAME or "
                              f"{path}.name=NAME), got {value!r}")
        name = Registered(self.kind).check(value["name"], path)
        valid = self.keys(name)
        for key in value:
            if key not in valid:
                owners = [n for n in names(self.kind) if key in self.keys(n)]
                hint = f"; {key} is a setting of {' and '.join(owners)}" if owners else did_you_mean(key, valid, f"{path}.")
                raise ConfigError(f"unknown key '{path}.{key}' for {name}{hint} (valid keys: {', '.join(valid)})")
        return parse(self.settings(name), value, path)

    def settings(self, name: str) -> type:
        return getattr(lookup(self.kind, name), "settings", None) or self.base

    def keys(self, name: str) -> list[str]:
        """The settings of the part `name`."""
        return [f.name for f in dataclasses.fields(self.settings(name))]


def choice_of(kind: str, base: type):
    """The annotation of a section choosing a registered `kind` with its settings (Chosen); `base`
    (a dataclass with a `name` field) is what every part's settings extend."""
    return Annotated[Any, Chosen(kind, base)]


def _typename(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is Annotated:
        marks = [m for m in tp.__metadata__ if isinstance(m, Registered)]
        return " | ".join(repr(n) for n in names(marks[0].kind)) if marks else _typename(tp.__origin__)
    if origin in (Union, types.UnionType):
        return " or ".join(_typename(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_typename(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


FLOAT32_MAX = 3.4028234663852886e38


def coerce(tp, value, path: str):
    """Check `value` against the type annotation `tp`; return it (converted where lossless)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, path)
    if origin is Annotated:
        for mark in tp.__metadata__:
            if isinstance(mark, Chosen):
                return mark.parse(value, path)
        value = coerce(tp.__origin__, value, path)
        for mark in tp.__metadata__:
            if isinstance(mark, Registered):
                value = mark.check(value, path)
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: expected {_typename(tp)}, got {value!r}")
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise ConfigError(f"{path}: must be one of {', '.join(repr(a) for a in args)}, got {value!r}"
                          + did_you_mean(value, args))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list ({_typename(tp)}), got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): coerce(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, (float, str)):  # 1e4 or "1e4" in YAML: accept when integral
            try:
                f = float(value)
                if f.is_integer():
                    return int(f)
            except ValueError:
                pass
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            # No setting means anything at NaN or inf (null turns the optional ones off), nor beyond
            # float32, which every tensor it reaches holds: refusing them here keeps NaN weights and
            # overflowing learning rates out of every section at once.
            require(math.isfinite(number) and abs(number) <= FLOAT32_MAX,
                    f"{path}: must be a finite number within float32's range (|x| <= 3.4e38), got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"config schema uses an unsupported type {tp!r} at {path}")
    raise ConfigError(f"{path}: expected {_typename(tp)}, got {value!r}")


def parse(cls, raw, path: str):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names_ = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in raw:
        if key not in names_:
            raise ConfigError(f"unknown key '{path}.{key}'" + did_you_mean(key, names_, f"{path}.")
                              + f" (valid keys: {', '.join(names_)})")
    kwargs = {name: coerce(hints[name], raw[name], f"{path}.{name}") for name in names_ if name in raw}
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in raw
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key '{path}.{missing[0]}': add it to the config")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(path)
    return obj


def require(condition: bool, message: str):
    if not condition:
        raise ConfigError(message)


def require_positive(obj, path: str, *keys: str, optional: bool = False):
    """Each named setting > 0 (or null, when `optional`); NaN and inf never pass coerce()."""
    for key in keys:
        value = getattr(obj, key)
        require((optional and value is None) or (value is not None and value > 0),
                f"{path}.{key}: must be positive{' or null' if optional else ''}, got {value!r}")


def require_square(info):
    """Conv nets here take square images; image_folder data of another shape needs a resize."""
    require(len(info.shape) == 3, f"data: these networks take images (C, H, W), the data's samples have "
                                  f"shape {tuple(info.shape)}")
    h, w = info.shape[-2:]
    require(h == w, f"data.image_size: these networks take square images, the data is {h}x{w} px; "
                    f"set data.image_size to resize them")


SEED_LIMIT = 2**63  # torch.manual_seed takes 64 bits; NumPy and Python take any non-negative int


def check_seed(seed: int, name: str = "seed"):
    require(0 <= seed < SEED_LIMIT, f"{name}: must be in [0, 2^63), got {seed}")


def to_dict(obj):
    """Dataclasses → plain YAML-able dicts (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
