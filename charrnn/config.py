"""Run configuration: strict dataclasses, the single source of defaults, read from/written to YAML.

A config file is a YAML mapping with the top-level keys `name` and `out_dir` and the sections
`data`, `model` and `train`; every key is optional and takes the default declared below. Files
are parsed with `yaml.safe_load` only, so no YAML tag can construct a Python object. Unknown keys,
wrong types and out-of-range values are `UsageError`s naming the file (or the `--set` override)
and the key.

Each field declares its type and its rules with `spec(...)` (config_fields.py reads them and
checks every value); each section adds only the rules that tie two of its fields together
(`_cross_check`). The sections validate on construction, so a Config built in code is held to
the same rules as one read from a file.

This is the only module that imports yaml.
"""

import dataclasses
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import yaml

from charrnn import names
from charrnn.atomic import replace_file
from charrnn.config_fields import ConfigError, Section, member_types, show, spec, unknown_key
from charrnn.errors import UsageError

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
]


def _known_text_encoding(name: str) -> str | None:
    try:
        # encoding a character (not just codecs.lookup) also rejects bytes-to-bytes codecs such
        # as base64; an empty string would short-circuit before the codec is looked at
        "a".encode(name)
    except UnicodeError:
        pass  # a text codec that cannot represent "a" is still a text codec
    except LookupError:
        return f"must be a text encoding Python knows, e.g. utf-8 or latin-1 (got {name!r})"
    return None


def _increasing_ranks(cutoffs: list[int]) -> str | None:
    if cutoffs[0] < 1 or any(b <= a for a, b in zip(cutoffs, cutoffs[1:])):
        return f"must be increasing frequency ranks >= 1, e.g. [1200, 3300] (got {show(cutoffs)})"
    return None


def _count_or_auto(value: int | str) -> str | None:
    if isinstance(value, str) and value != "auto":
        return f"must be an integer or auto (got {show(value)})"
    return None


# train.max_steps auto times these steps (counted from 1; the first ones carry one-time costs)
# and lays the schedule over the steps the rest of train.max_time allows at their mean speed.
HORIZON_PILOT = range(6, 36)


def _plain_directory_name(name: str) -> str | None:
    if name in (".", "..") or "/" in name or "\\" in name:
        return f"must be a plain directory name without path separators (got {name!r})"
    return None


@dataclass
class DataConfig(Section):
    """Where the text comes from and how it becomes a vocabulary."""

    _section: ClassVar[str] = "data"

    path: str | list[str] = "corpora/tinyshakespeare.txt"  # text file(s), relative to the cwd
    val_path: str | list[str] | None = None  # separate validation text; None = tail of path
    val_fraction: float = spec(0.1, gt=0.0, lt=1.0)  # held-out tail of path when val_path is None
    encoding: str = spec("utf-8", check=_known_text_encoding)  # codec of the text files
    max_vocab: int | None = spec(None, ge=2)  # most frequent characters + <unk>; None = all
    cache: bool = True  # keep the encoded ids in cache_dir and memory-map them in later runs
    cache_dir: str | None = None  # None = $XDG_CACHE_HOME/charrnn, else ~/.cache/charrnn


@dataclass
class ModelConfig(Section):
    """The network: recurrent cells between one-hot (or embedded) input and a softmax head."""

    _section: ClassVar[str] = "model"

    cell: str = spec("lstm", choices=names.CELLS)  # recurrent cell type
    hidden_size: int = spec(128, ge=1, le=65536)  # units per recurrent layer
    num_layers: int = spec(2, ge=1, le=16)  # stacked recurrent layers
    embedding_size: int = spec(0, ge=0, le=65536)  # 0 = one-hot input straight into the first layer
    dropout: float = spec(0.0, ge=0.0, lt=1.0)  # drop probability on recurrent layer outputs
    peephole: bool = False  # LSTM gates also see the cell state (lstm only)
    nonlinearity: str = spec("tanh", choices=names.NONLINEARITIES)  # vanilla RNN activation (rnn only)
    head: str = spec("full", choices=names.HEADS)  # softmax over all characters, or adaptive (frequent ones first)
    head_cutoffs: list[int] | None = spec(None, check=_increasing_ranks)  # adaptive: shortlist size, then each cluster's first rank; null = at 80%, 95% and 99% of the training tokens
    head_div: float = spec(4.0, ge=1.0, le=1024.0)  # adaptive: cluster i projects to hidden_size / head_div^(i+1)

    def _cross_check(self) -> None:
        if self.peephole and self.cell != "lstm":
            raise ConfigError(self._key("peephole"),
                              f"model.peephole applies only to cell lstm (cell is {self.cell!r}); "
                              "remove it or set it to false")
        if self.head != "adaptive" and (self.head_cutoffs is not None or self.head_div != 4.0):
            key = "head_cutoffs" if self.head_cutoffs is not None else "head_div"
            raise ConfigError(self._key(key), f"model.{key} applies only to head adaptive "
                              f"(head is {self.head!r}); remove it or set model.head: adaptive")
        if self.nonlinearity != "tanh" and self.cell != "rnn":
            raise ConfigError(self._key("nonlinearity"),
                              "model.nonlinearity applies only to cell rnn "
                              f"(cell is {self.cell!r}); "
                              "remove it or set it to tanh")


@dataclass
class TrainConfig(Section):
    """Optimisation, schedule, stopping, evaluation and recovery from divergence."""

    _section: ClassVar[str] = "train"

    batch_size: int = spec(32, ge=1, le=1_000_000)  # parallel streams through the text
    seq_len: int = spec(64, ge=1, le=1_000_000)  # timesteps per truncated-BPTT window
    optimizer: str = spec("adam", choices=names.OPTIMIZERS)  # update rule
    learning_rate: float = spec(2e-3, gt=0.0)  # base step size (peak of the schedule)
    momentum: float = spec(0.9, ge=0.0, lt=1.0)  # sgd only; 0 = plain SGD
    beta1: float = spec(0.9, ge=0.0, lt=1.0)  # adam: decay of the first-moment average
    beta2: float = spec(0.999, ge=0.0, lt=1.0)  # adam: decay of the second-moment average
    eps: float = spec(1e-8, gt=0.0)  # adagrad/rmsprop/adam: keeps the denominator away from zero
    weight_decay: float = spec(0.0, ge=0.0)  # decoupled for adam, plain L2 for the others
    alpha: float = spec(0.99, ge=0.0, lt=1.0)  # rmsprop: decay of the squared-gradient average
    grad_clip: float = spec(5.0, ge=0.0)  # clipping threshold; 0 = off
    clip_mode: str = spec("norm", choices=names.CLIP_MODES)  # global L2 norm or element-wise
    schedule: str = spec("constant",  # learning rate after warm-up
                          choices=names.SCHEDULES)
    warmup_steps: int = spec(0, ge=0)  # linear warm-up from learning_rate/warmup_steps
    decay_rate: float = spec(0.5, gt=0.0, le=1.0)  # exponential/step: factor per decay_every steps
    decay_every: int = spec(1000, ge=1)  # exponential/step: steps per decay_rate factor
    min_lr: float = spec(0.0, ge=0.0)  # cosine: learning rate at the end of the schedule
    max_steps: int | str | None = spec(1000, ge=1, check=_count_or_auto)  # stop after this many updates (None = no step limit); auto = as many as max_time allows, timed over steps 6-35
    max_epochs: int | None = spec(None, ge=1)  # stop after this many passes over the training text
    max_time: float | None = spec(None, gt=0.0)  # stop after this many seconds of training
    eval_every: int = spec(200, ge=1)  # steps between validation, sample and checkpoint
    eval_chars: int | None = spec(None, ge=2)  # periodic evaluations score the first this many validation characters; None = all
    log_every: int = spec(10, ge=1)  # steps between training-loss log lines
    sample_length: int = spec(200, ge=0, le=1_000_000)  # characters sampled at each evaluation (0 = none)
    seed: int = spec(1234, ge=0)  # seeds initialisation, dropout and samples
    dtype: str = spec("float32", choices=names.DTYPES)  # parameter/activation precision
    processes: int | str = spec("auto", ge=1, le=64, check=_count_or_auto)  # processes sharing each window's rows (1 = no workers); auto = from the cores and the step's size
    divergence_factor: float = spec(4.0, gt=1.0)  # loss > this x its running average (or x ln V) = divergence
    rollback_lr_factor: float = spec(0.5, gt=0.0, lt=1.0)  # learning rate multiplier per rollback
    max_rollbacks: int = spec(5, ge=0)  # rollbacks allowed before training gives up

    def _cross_check(self) -> None:
        if self.max_steps is None and self.max_epochs is None and self.max_time is None:
            raise ConfigError(self._key("max_steps"),
                              "train.max_steps, train.max_epochs and train.max_time are all null; "
                              "set at least one so training can stop")
        if self.max_steps == "auto" and self.max_time is None:
            raise ConfigError(self._key("max_steps"),
                              "train.max_steps auto counts the steps train.max_time allows; "
                              "set train.max_time (seconds) or give max_steps a number")
        if self.max_steps == "auto" and self.schedule == "cosine" and self.warmup_steps < HORIZON_PILOT[-1]:
            raise ConfigError(self._key("warmup_steps"),
                              f"train.max_steps auto times steps {HORIZON_PILOT[0]}-{HORIZON_PILOT[-1]} "
                              "before the cosine decay needs its horizon: set train.warmup_steps to at "
                              f"least {HORIZON_PILOT[-1]} (now {self.warmup_steps})")
        if self.schedule == "cosine" and self.max_steps is None and self.max_epochs is None:
            raise ConfigError(self._key("schedule"),
                              "train.schedule cosine decays over a known number of steps; "
                              "set train.max_steps or train.max_epochs")
        if isinstance(self.processes, int) and self.processes > self.batch_size:
            raise ConfigError(self._key("processes"),
                              f"train.processes ({self.processes}) must not exceed "
                              f"train.batch_size ({self.batch_size}): each process takes rows of the batch")
        if self.min_lr > self.learning_rate:
            raise ConfigError(self._key("min_lr"),
                              f"train.min_lr ({self.min_lr:g}) must not exceed "
                              f"train.learning_rate ({self.learning_rate:g})")


@dataclass
class Config(Section):
    """A whole run: its name and output directory plus the data, model and train sections."""

    _section: ClassVar[str] = ""

    name: str = spec("run", check=_plain_directory_name)  # run directory name under out_dir
    out_dir: str = "runs"  # parent directory of run directories
    data: DataConfig = spec(default_factory=DataConfig)  # text and vocabulary
    model: ModelConfig = spec(default_factory=ModelConfig)  # network shape
    train: TrainConfig = spec(default_factory=TrainConfig)  # optimisation and stopping


_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _valid_keys(section: str | None) -> list[str]:
    return [f.name for f in fields(_SECTIONS[section] if section else Config)]


def _section_values(raw: dict, name: str) -> dict:
    """The mapping given for section `name` ({} when absent or empty), checked to be a mapping."""
    values = raw.get(name)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(name, f"{name} must be a mapping of keys (got {show(values)})")
    return values


def _build(raw: dict) -> Config:
    """A Config from a nested mapping of user values; ConfigError names the first bad key."""
    top_keys = _valid_keys(None)
    for key in raw:
        if key not in top_keys:
            raise unknown_key(str(key), top_keys)
    sections = {}
    for name, cls in _SECTIONS.items():
        values = _section_values(raw, name)
        valid = _valid_keys(name)
        for key in values:
            if key not in valid:
                raise unknown_key(f"{name}.{key}", valid)
        sections[name] = cls(**values)
    plain = {key: raw[key] for key in raw if key not in _SECTIONS}
    return Config(**plain, **sections)


def _read_yaml(path: str) -> Any:
    """The parsed content of a YAML file; UsageError naming the file for every failure."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise UsageError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte offset {exc.start}); "
                         "save the config as UTF-8") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    return _parse_yaml(text, path)


def _parse_yaml(text: str, where: str) -> Any:
    """yaml.safe_load with its errors turned into one-line UsageErrors prefixed by `where`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        if isinstance(exc, yaml.constructor.ConstructorError):
            tag = re.search(r"tag '([^']*)'", problem)
            if tag:
                shown = tag.group(1).replace("tag:yaml.org,2002:", "!!")
                raise UsageError(f"{where}: {at}YAML tag {shown!r} is not allowed; "
                                 "a config holds plain values only") from None
        raise UsageError(f"{where}: {at}invalid YAML: {problem}") from None


def _parse_override(text: str) -> tuple[str | None, str, Any]:
    """Split an override "section.key=value" (or "key=value") into (section or None, key, value)."""
    label = f"--set {text}"
    dotted, sep, raw_value = text.partition("=")
    dotted = dotted.strip()
    if not sep or not dotted:
        raise UsageError(f"{label}: expected KEY=VALUE, e.g. train.learning_rate=1e-3")
    parts = dotted.split(".")
    if len(parts) > 2:
        raise UsageError(f"{label}: {dotted!r} is not a key; keys look like section.key, "
                         "e.g. train.learning_rate")
    if len(parts) == 2 and parts[0] not in _SECTIONS:
        raise UsageError(f"{label}: {unknown_key(parts[0], list(_SECTIONS))}")
    section, key = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    if section is None and key in _SECTIONS:
        raise UsageError(f"{label}: {key} is a section; set one of its keys, "
                         f"e.g. {key}.{_valid_keys(key)[0]}=...")
    if key not in _valid_keys(section):
        raise UsageError(f"{label}: {unknown_key(dotted, _valid_keys(section))}")
    value = _parse_yaml(raw_value, label)
    owner = _SECTIONS[section] if section else Config
    annotation = next(f.type for f in fields(owner) if f.name == key)
    if str in member_types(annotation) and not isinstance(value, (str, list, type(None))):
        # quoting is awkward on a command line: name=2024 means the text "2024"
        value = raw_value.strip()
    return section, key, value


def load_config(path: str | None, overrides: list[str] | tuple[str, ...] = (),
                base: dict | None = None) -> Config:
    """Read a YAML config (None = all defaults) and apply "section.key=value" overrides in order.

    base: a config dict (e.g. the one stored in a checkpoint) used in place of a file; `path`
    then only names it in error messages.
    Raises UsageError with a one-line message naming the file or override and the key.
    """
    source = str(path) if path is not None else "defaults"
    if base is not None:
        raw = base
    else:
        raw = {} if path is None else _read_yaml(str(path))
    if raw is None:
        raw = {}  # an empty file means every default
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: the top level must be a mapping of keys "
                         f"({', '.join(_valid_keys(None))}), got {type(raw).__name__}")
    try:
        merged = {key: value for key, value in raw.items() if key not in _SECTIONS}
        merged.update({name: dict(_section_values(raw, name)) for name in _SECTIONS})
    except ConfigError as exc:
        raise UsageError(f"{source}: {exc}") from None
    origin = {}  # dotted key -> the override that set it, so an error blames the right place
    for text in overrides:
        section, key, value = _parse_override(text)
        (merged[section] if section else merged)[key] = value
        origin[f"{section}.{key}" if section else key] = f"--set {text}"
    try:
        return _build(merged)
    except ConfigError as exc:
        raise UsageError(f"{origin.get(exc.key, source)}: {exc}") from None


def config_to_dict(cfg: Config) -> dict:
    """The config as nested plain dicts, lists, str, int, float, bool and None (JSON/YAML ready)."""
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict, source: str = "config") -> Config:
    """A Config from `config_to_dict` output (e.g. stored in a checkpoint), validated like a file.

    `source` names where the dict came from in error messages (e.g. the checkpoint path).
    """
    if not isinstance(d, dict):
        raise UsageError(f"{source}: a config must be a mapping of keys, got {type(d).__name__}")
    try:
        return _build(d)
    except ConfigError as exc:
        raise UsageError(f"{source}: {exc}") from None


def dump_config(cfg: Config, path: str) -> None:
    """Write the config as YAML, keys in schema order; load_config(path) gives an equal Config."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True,
                          default_flow_style=False)
    replace_file(path, lambda fh: fh.write(text.encode("utf-8")))


def config_text(d: dict) -> str:
    """A config dict (as stored in checkpoints) rendered as YAML for display."""
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True, default_flow_style=False)
