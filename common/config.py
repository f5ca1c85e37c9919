"""A run's configuration: YAML files and dotted command-line overrides, checked section by section.

The sections every method shares are here (data:, init:, train:, optim:'s Adam settings, eval:);
a method declares the rest: its `model:` and `optim:` dataclasses and its own section, stored under
the method's name (`gan:`, `ncsn:`...) and read as `cfg.gan`, `cfg.ncsn`: the typed parser is
common/schema.py, the names a setting may take come from the registry (common/registry.py).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from . import init as init_schemes  # noqa: F401  (registers the initialisation schemes)
from . import lr_schedule  # also registers the learning-rate schedules
from .errors import ConfigError, did_you_mean
from .paths import write_text_atomic
from .registry import lookup, names
from .schema import check_seed, coerce, one_of, parse, require, require_positive, to_dict


@dataclass
class DataConfig:
    name: one_of("dataset") = "fashion_mnist"
    root: str = "datasets"             # where data sets live (or are downloaded to)
    download: bool = False             # let torchvision download when the files are missing
    split: str = "train"               # train | test (CelebA also: valid | all)
    image_size: Optional[int] = None   # null: the data set's own size
    channels: Optional[int] = None     # image_folder: 1 or 3 (null: 3)
    flip: bool = False                 # random horizontal flip
    crop: int = 140                    # CelebA centre crop before the resize
    path: Optional[str] = None         # image_folder: a folder or a .zip of <class>/<image> files
    toy: str = "8gaussians"            # toy: 8gaussians | rings | checkerboard | spirals | gaussian
    toy_size: int = 100_000            # toy: number of points drawn once (fixed by the seed)
    loader: Literal["auto", "device", "workers"] = "auto"  # auto: small sets on the device, large via workers
    num_workers: int = 4

    def check(self, path):
        """Generic checks, then the data set's own: the splits it has (`splits`, default train and
        test) and what it needs of the other keys (`check_config`), both declared where it registers."""
        loader = lookup("dataset", self.name, f"{path}.name")
        splits = dataset_splits(self.name)
        require(self.split in splits, f"{path}.split: must be one of {', '.join(splits)} for "
                                      f"{self.name}, got {self.split!r}")
        require_positive(self, path, "image_size", optional=True)
        require_positive(self, path, "crop", "toy_size")
        require(self.num_workers >= 0, f"{path}.num_workers: must be >= 0 (0 loads in the main process)")
        require(self.channels in (None, 1, 3), f"{path}.channels: must be 1, 3 or null")
        check = getattr(loader, "check_config", None)
        if check is not None:
            check(self, path)


def dataset_splits(name: str) -> tuple[str, ...]:
    """The splits a registered data set has: its `splits`, else train and test."""
    return getattr(lookup("dataset", name), "splits", ("train", "test"))


@dataclass
class InitConfig:
    """Weight initialisation of one network (common/init.py)."""
    scheme: one_of("init_scheme") = "default"  # common/init.py
    std: float = 0.02                  # normal
    gain: float = 1.0                  # xavier_*, orthogonal, fan_in_normal (scales std)
    nonlinearity: Literal["relu", "leaky_relu", "linear"] = "relu"   # kaiming_*
    negative_slope: float = 0.2        # kaiming_* with leaky_relu

    def check(self, path):
        require(self.std >= 0, f"{path}.std: must be >= 0, got {self.std}")
        require(self.negative_slope >= 0, f"{path}.negative_slope: must be >= 0, got {self.negative_slope}")


@dataclass
class TrainConfig:
    steps: int = 20_000
    batch_size: int = 64               # examples per optimizer step over all processes (torchrun: each reads 1/N)
    micro_batch: Optional[int] = None  # at most this many per process at once: gradient accumulation (null: all)
    log_every: int = 50                # scalars to TensorBoard, metrics.jsonl and the progress bar
    sample_every: int = 500            # PNG grid in samples/ and in TensorBoard
    n_samples: int = 64                # images in each grid
    ckpt_every: int = 1000             # checkpoints/last.pt
    keep_every: int = 0                # also keep checkpoints/step_XXXXXXX.pt every N steps (0: never)
    max_minutes: Optional[float] = None  # wall-time budget: checkpoint and stop when spent (each session's;
    #                                    the whole run's with optim.schedule_over: minutes)
    ema: Optional[float] = 0.999       # decay of the weights' exponential moving average (null: off)
    ema_warmup: bool = True            # decay min(ema, (1 + t)/(10 + t)) at update t (common/ema.py)
    # Or EDM's form, which a change of batch size leaves meaning the same: the average's half-life in
    # thousands of training images (turns EMA on; replaces ema and ema_warmup), capped while young
    # at ema_rampup × the images seen so far (EDM: 500 kimg and 0.05 for CIFAR-10).
    ema_halflife_kimg: Optional[float] = None
    ema_rampup: Optional[float] = None
    # Fast paths (off: the fp32 eager baseline, numerically the same within float tolerance):
    compile: bool = False              # torch.compile every network (forward and backward graphs)
    cuda_graph: bool = False           # capture the whole step (fwd, bwd, optimizer, EMA) as one CUDA graph
    channels_last: bool = False        # NHWC memory format for conv nets and image batches
    # Deterministic kernels (cuDNN without autotuning, torch.use_deterministic_algorithms): on a GPU the
    # same run twice, or k steps + resume + k steps, gives the same weights bitwise; slower. The CPU's
    # kernels are deterministic already.
    deterministic: bool = False

    def check(self, path):
        require_positive(self, path, "steps", "batch_size", "log_every", "sample_every", "n_samples",
                         "ckpt_every")
        require_positive(self, path, "max_minutes", "micro_batch", optional=True)
        require(self.micro_batch is None or self.batch_size % self.micro_batch == 0,
                f"{path}.micro_batch: must divide {path}.batch_size ({self.batch_size}) so that every part "
                f"weighs the same, got {self.micro_batch}")
        require(self.keep_every >= 0, f"{path}.keep_every: must be >= 0")
        require(self.ema is None or 0.0 <= self.ema < 1.0, f"{path}.ema: must be in [0, 1) or null")
        require_positive(self, path, "ema_halflife_kimg", "ema_rampup", optional=True)
        require(self.ema_rampup is None or self.ema_halflife_kimg is not None,
                f"{path}.ema_rampup: caps a half-life; set {path}.ema_halflife_kimg too, or drop it")


@dataclass
class OptimConfig:
    """Adam(W) settings shared by every method; methods add their learning rates."""
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: Optional[float] = None  # clip the global gradient norm of each network (null: off)
    fused: bool = False                # fused (single-kernel) Adam instead of torch's default foreach one
    optimistic: bool = False           # Optimistic Adam: step by 2Δ_t − Δ_{t−1} (common/optimism.py)
    # Learning-rate schedule (common/lr_schedule.py), the same factor for every network's rate:
    schedule: one_of("lr_schedule") = "constant"  # after the warm-up: constant | cosine | linear to decay_to
    warmup: int = 0                    # steps of linear warm-up (EDM's lr ramp-up, NCSNv2's warmup)
    decay_to: float = 0.0              # cosine/linear: the last step's rate as a fraction of the peak
    # What the schedule runs over: train.steps, or train.max_minutes of training (the run's wall-time
    # budget: its rate reaches decay_to when the budget is spent, whatever the machine's speed).
    schedule_over: Literal["steps", "minutes"] = "steps"

    def check(self, path):
        """Adam's own domain (torch refuses the rest mid-run, or trains on garbage): every learning
        rate (the lr* keys methods add) > 0, betas in [0, 1), eps > 0, clipping norm > 0."""
        require_positive(self, path, *(f.name for f in dataclasses.fields(self) if f.name.startswith("lr")))
        require(all(0.0 <= beta < 1.0 for beta in self.betas),
                f"{path}.betas: each must be in [0, 1), got {list(self.betas)}")
        require_positive(self, path, "eps")
        require(self.weight_decay >= 0, f"{path}.weight_decay: must be >= 0, got {self.weight_decay}")
        require_positive(self, path, "grad_clip", optional=True)
        require(self.warmup >= 0, f"{path}.warmup: must be >= 0 steps (0: no warm-up), got {self.warmup}")
        require(0.0 <= self.decay_to <= 1.0, f"{path}.decay_to: must be in [0, 1] (a fraction of the peak "
                                             f"learning rate), got {self.decay_to}")


@dataclass
class EvalConfig:
    """Sample-quality metrics during training (engine/evaluation/; scripts/evaluate.py does the same
    for a checkpoint): FID, KID, Inception Score, precision and recall against the training data."""
    every: int = 0                     # evaluate every N steps (0: off)
    n: int = 5000                      # generated samples per evaluation
    features: str = "inception"        # inception | classifier:PATH (from scripts/train_classifier.py)
    batch_size: int = 250              # samples drawn and featurised at once
    download: bool = False             # let torch-fidelity fetch the Inception weights when missing

    def check(self, path):
        require(self.every >= 0, f"{path}.every: must be >= 0 (0 turns evaluation off)")
        require(self.n >= 2, f"{path}.n: must be at least 2 (FID needs a covariance)")
        require(self.batch_size > 0, f"{path}.batch_size: must be positive")
        require(self.features == "inception" or (self.features.startswith("classifier:")
                                                  and len(self.features) > len("classifier:")),
                f"{path}.features: must be 'inception' or 'classifier:PATH', got {self.features!r}")


PRECISIONS = Literal["fp32", "bf16", "fp16", "auto"]
TOP_KEYS = ("method", "seed", "device", "precision", "data", "model", "init", "optim", "train", "eval")


@dataclass
class Config:
    """A run's settings. The method's own section is a field named after the method (cfg.gan,
    cfg.ncsn...), added by the subclass `config_class` makes for it."""
    method: str
    data: DataConfig
    model: Any                         # the method's ModelConfig
    optim: Any                         # the method's OptimConfig
    train: TrainConfig
    init: dict[str, InitConfig] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    precision: PRECISIONS = "fp32"     # fp16: autocast with a gradient scaler; auto: bf16 where the hardware
                                       # runs it fast, else fp32 (engine/runtime.py's resolve_precision)

    def to_dict(self) -> dict:
        out = {"method": self.method, "seed": self.seed, "device": self.device,
               "precision": self.precision}
        for key in ("data", "model", "init", "optim", "train", "eval", self.method):
            out[key] = to_dict(getattr(self, key))
        return out


@functools.cache
def config_class(method: str, section: type) -> type:
    """Config with a field `method` holding the method's own section (a dataclass)."""
    own = (method, section, field(kw_only=True))
    return dataclasses.make_dataclass(f"Config_{method}", [own], bases=(Config,))


def build_config(raw: dict) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a YAML mapping with at least 'method:'")
    if "method" not in raw:
        raise ConfigError("missing key 'method': set it to one of the registered methods")
    spec = lookup("method", coerce(str, raw["method"], "method"))
    raw = spec.upgrade_config(raw)
    name = spec.name
    allowed = TOP_KEYS + (name,)
    for key in raw:
        if key not in allowed:
            hint = (f"; section '{key}' belongs to method '{key}', not '{name}'" if key in names("method")
                    else did_you_mean(key, allowed))
            raise ConfigError(f"unknown top-level key '{key}'{hint} (valid keys: {', '.join(allowed)})")
    seed = coerce(int, raw.get("seed", 0), "seed")
    check_seed(seed)
    device = coerce(str, raw.get("device", "auto"), "device")
    require(device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", device) is not None,
            f"device: must be auto, cpu, cuda or cuda:N, got {device!r}")
    init = coerce(dict[str, InitConfig], raw.get("init") or {}, "init")
    for net in init:
        require(net in spec.networks, f"unknown key 'init.{net}'" + did_you_mean(net, spec.networks, "init.")
                + f" (networks of {name}: {', '.join(spec.networks)})")
    cfg = config_class(name, spec.Config)(
        method=name,
        seed=seed,
        device=device,
        precision=coerce(PRECISIONS, raw.get("precision", "fp32"), "precision"),
        data=parse(DataConfig, raw.get("data"), "data"),
        model=parse(spec.ModelConfig, raw.get("model"), "model"),
        init=init,
        optim=parse(spec.OptimConfig, raw.get("optim"), "optim"),
        train=parse(TrainConfig, raw.get("train"), "train"),
        eval=parse(EvalConfig, raw.get("eval"), "eval"),
        **{name: parse(spec.Config, raw.get(name), name)},
    )
    spec.check_config(cfg)
    require(not (cfg.train.compile and spec.needs_double_backward(cfg)),
            f"train.compile: {name} differentiates through gradients here (energy scores, R1 or GP), "
            f"which torch.compile does not support; set train.compile=false")
    require(cfg.optim.schedule_over == "steps" or cfg.train.max_minutes is not None,
            "optim.schedule_over: minutes spreads the schedule over train.max_minutes, which is not set; "
            "set train.max_minutes=M or optim.schedule_over=steps")
    require(not (cfg.optim.optimistic and cfg.optim.fused and cfg.precision == "fp16"),
            "optim.optimistic: fp16's gradient scaler skips an overflowed step inside fused Adam, where the "
            "optimistic correction cannot see it; set optim.fused=false or use precision=bf16")
    check_fast_paths(cfg)
    return cfg


def check_fast_paths(cfg: Config):
    """Fast paths that do not combine: channels_last under torch.compile, and what a captured CUDA
    graph cannot replay: a learning rate that changes (the graph keeps the one it captured) and
    fp16's gradient scaler (it reads the device to decide whether to step)."""
    require(not (cfg.train.compile and cfg.train.channels_last),
            "train.channels_last: not with train.compile, which chooses the convolutions' memory layout "
            "itself (on CUDA, torch 2.11's compiled backward fails on a channels_last transposed "
            "convolution); set train.channels_last=false")
    if not cfg.train.cuda_graph:
        return
    require(not lr_schedule.scheduled(cfg.optim),
            "train.cuda_graph: a captured step replays the learning rate it was captured with, so "
            "optim.warmup and optim.schedule cannot change it; set train.cuda_graph=false or "
            "optim.warmup=0 optim.schedule=constant")
    require(cfg.precision != "fp16",
            "train.cuda_graph: fp16's gradient scaler decides on the host whether to step, which a "
            "CUDA graph cannot replay; use precision=bf16 or set train.cuda_graph=false")


class StrictLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a mapping that gives a key twice: YAML forbids it, and
    PyYAML would keep the later value without a word (two `train:` sections: the first is lost)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, _ in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is None or key == "<<":
                    continue
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key}' appears twice (first at line {first[key] + 1}): keep one",
                        key_node.start_mark)
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(text_or_file):
    """yaml.safe_load with duplicate keys refused (StrictLoader)."""
    return yaml.load(text_or_file, Loader=StrictLoader)


def read_yaml(path) -> dict:
    """A config file's mapping; a missing, unreadable, non-UTF-8 or non-mapping file is one line."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise ConfigError(f"config file {path} {what}: pass an existing file, e.g. "
                          f"--config configs/fashion_mnist_dcgan.yaml")
    try:
        with open(path, encoding="utf-8") as f:
            raw = load_yaml(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = str(getattr(e, "problem", None) or e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read ({e.strerror}): check its permissions") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        kind = {"list": "a list", "str": "a string", "int": "a number", "float": "a number",
                "bool": "a boolean"}.get(type(raw).__name__, type(raw).__name__)
        raise ConfigError(f"config file {path} holds {kind}, not a mapping: write it as 'key: value' "
                          f"lines, starting with 'method:'")
    return raw


def apply_overrides(raw: dict, overrides) -> dict:
    """Apply `a.b.c=value` strings; values are parsed as YAML (so 2e-4, true, [0.5, 0.9] work)."""
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a YAML mapping with at least 'method:'")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value (e.g. train.steps=1000)")
        key, text = item.split("=", 1)
        if not all(part.strip() for part in key.split(".")):
            raise ConfigError(f"override '{item}': '{key}' is not a dotted key (e.g. train.steps=1000)")
        try:
            value = load_yaml(text) if text != "" else None
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if isinstance(child, str):  # a section given by its name alone (sampler: edm), now with settings
                child = node[part] = {"name": child}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{'.'.join(parts[:i + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def upgrade_saved(raw):
    """A config saved by a run (a checkpoint's, a run's config.yaml), with each key its method added
    since (`Method.saved_defaults`) filled in as it was then, so that the run means what it meant."""
    if not isinstance(raw, dict) or raw.get("method") not in names("method"):
        return raw  # not a config: the parser names the problem
    raw = copy.deepcopy(raw)
    for section, keys in lookup("method", raw["method"]).saved_defaults.items():
        if isinstance(raw.get(section), dict):
            for key, value in keys.items():
                raw[section].setdefault(key, value)
    return raw


def load_config(path=None, overrides=(), raw: Optional[dict] = None) -> Config:
    """The fully checked config from a YAML file (or a dict) and dotted overrides."""
    raw = read_yaml(path) if raw is None else copy.deepcopy(raw)  # a checkpoint's config stays as saved
    return build_config(apply_overrides(raw, overrides))


def save_config(cfg: Config, path):
    """The resolved config as YAML, written atomically (a full disk leaves no empty config.yaml)."""
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
