"""Sweep configuration: YAML -> frozen dataclasses, with defaults stated once, here.

Every key is checked: an unknown or misspelt key, a wrong type or an impossible value raises
``ConfigError`` with one line naming the key and what is allowed. Numbers written ``1.0e6`` or
``2e5`` (which PyYAML reads as strings) are coerced by the field's declared type.

Example:
    >>> cfg = load_config("configs/quick.yaml", overrides=["train.lr=1e-3"])  # doctest: +SKIP
    >>> [run.name for run in cfg.runs()][:2]                                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jaxscale.config_checks import ConfigError, validate
from jaxscale.counting import (
    PRESETS,
    TOKENIZER_VOCAB,
    ModelShape,
    flops_per_token_counted,
    non_embedding_params,
    params_with_head,
)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Optimisation of one run (AdamW, warmup then decay over exactly the run's tokens)."""

    batch_size: int = 32  # sequences per optimizer step (split into `accum` micro-batches)
    lr: float = 3e-3  # peak learning rate
    warmup: float = 0.05  # fraction of the run's steps spent in linear warmup from 0
    # cosine | constant: the shape after warmup; wsd: warmup-stable-decay (Hägele et al. 2024),
    # one constant-lr trunk per model with a short decay branched off at each D
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1  # the decay ends at lr x min_lr_ratio, on the run's last step
    decay: float = 0.2  # wsd: the share of each run's steps spent in its (1 - sqrt) cooldown
    weight_decay: float = 0.1  # decoupled decay on matrices (not biases, LayerNorms)
    beta1: float = 0.9  # Adam first-moment decay
    beta2: float = 0.95  # Adam second-moment decay
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 disables)
    accum: int = 1  # micro-batches per step (at least; CPU splits finer: train.micro_batches)
    # compute dtype: auto (bfloat16 on GPU, float32 on CPU and Metal) | float32 | bfloat16;
    # parameters and optimiser state stay float32 either way
    dtype: str = "auto"
    evals: int = 4  # validation points along the run, the final one included
    # Per-run rules, applied by the planner (jaxscale.planner.run_training); 0 turns each off.
    # min_steps: halve the batch (from batch_size) until the run has at least this many steps,
    # so that the small-D runs of a ladder measure N and D, not the optimiser's first steps
    min_steps: int = 0
    # warmup of this many tokens per parameter (N with the head), instead of `warmup`'s fixed
    # fraction: Porian et al. 2024 warm up over N tokens (1.0); capped at half the run (under
    # schedule wsd, of the shape's longest run: the trunk its branches share)
    warmup_per_param: float = 0.0
    # peak lr scaled by width: lr x (lr_ref_width / d_model)^lr_width_power (0: the same lr)
    lr_ref_width: int = 0
    lr_width_power: float = 0.0
    # all: next-token loss on every token; answer: only on a task's answers (the targets after
    # "=" up to the line's end, see jaxscale.tasks), for task: corpora
    loss_on: str = "all"


@dataclass(frozen=True, slots=True)
class TTCConfig:
    """The test-time compute lab (``jaxscale.ttc``): how every trained model is sampled and fitted.

    Each of ``test_problems`` held-out problems of the sweep's ``task:`` corpus gets ``samples``
    completions at ``temperature`` (with ``top_k``/``top_p`` filtering) and one greedy one; pass@k
    and maj@k are estimated for each k of ``k`` (all <= samples).
    """

    samples: int = 32  # n, completions per problem
    k: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    temperature: float = 1.0
    top_k: int = 0  # keep the k most likely tokens (0: all)
    top_p: float = 1.0  # nucleus: the smallest set holding this much probability (1: all)
    test_problems: int = 200
    levels: tuple[float, ...] = (0.3, 0.5, 0.7)  # iso-accuracy levels of the train/test trade
    bootstrap: int = 200  # resamples (of problems, or of points for the law) for intervals
    batch_rows: int = 4096  # sequences decoded together
    seed: int = 0  # the sampling's random key


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """Validation on held-out documents."""

    tokens: int = 200_000  # predicted tokens per validation (the final one and those along the way)
    batch_size: int = 64  # sequences per validation batch


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One (model, tokens) point of a sweep: everything that makes its result.

    ``train`` holds every setting that shapes the run's training (batch size, peak lr, warmup,
    schedule, optimiser, dtype), resolved once by the sweep's planner (``jaxscale.planner``);
    the training code reads them from here. A spec built by hand may leave it None and give its
    ``lr`` only: ``resolve`` fills it in from a shared TrainConfig.
    """

    name: str  # e.g. "L2-d64-h2_D1M", unique within a sweep
    shape: ModelShape
    tokens: int  # D: training tokens; the schedule ends exactly here
    seed: int  # initialisation and data order
    lr: float | None = None  # peak learning rate asked for; None: the TrainConfig's
    # the run's own training settings (its peak lr is train.lr); None: see ``resolve``
    train: TrainConfig | None = None
    budget: float | None = None  # the compute budget (counted FLOPs) it was planned for, if any

    def resolve(self, default: TrainConfig | None) -> RunSpec:
        """This run with ``train`` set: its own if it has one, else ``default`` with the run's
        ``lr`` (when given) as the peak learning rate.

        Example:
          >>> RunSpec("r", ModelShape(1, 16, 2), 10**5, 0, 1e-3).resolve(TrainConfig()).train.lr
          0.001
        """
        if self.train is not None:
            return self
        if default is None:
            raise ValueError(f"run {self.name} has no training settings and none were given")
        lr = default.lr if self.lr is None else self.lr
        return dataclasses.replace(self, train=dataclasses.replace(default, lr=lr))


@dataclass(frozen=True, slots=True)
class RunPoint:
    """One explicit run, for sets that are not a grid (an IsoFLOP set: N varies, C = 6ND fixed)."""

    model: ModelShape
    tokens: float  # D, training tokens


@dataclass(frozen=True, slots=True)
class Budget:
    """One compute budget of an IsoFLOP design: training FLOPs per run (counted: attention and
    the head included) and, optionally, the shapes to train at it."""

    C: float
    models: tuple[ModelShape, ...] = ()  # none: the sweep picks per_budget of its models ...
    per_budget: int | None = None  # ... this many here (None: the sweep's per_budget)


@dataclass(frozen=True, slots=True)
class SweepConfig:
    """A ladder: every model shape trained on every token count."""

    name: str = "sweep"  # names the default output directory reports/<name>/
    corpus: str = "stdlib"  # stdlib | synthetic | text:PATH | tinystories | openwebtext
    tokenizer: str = "bytes"  # bytes | gpt2
    context: int = 128  # tokens per training sequence
    seed: int = 0  # initialisation and data order
    seeds: tuple[int, ...] = ()  # several seeds: every run once per seed (a pack trains them)
    # ... or this many replicas of every run, seeds seed·replicas + 0, 1, ...: sweeps with
    # different seeds never share one; the fits average them, and on CPU a pack gives each
    # replica a core of its own, no gradient all-reduce between them
    replicas: int = 1
    # several peak learning rates, written `train: {lr: [1e-3, 3e-3]}`: every run once per lr;
    # the report fits the best lr of each (N, D)
    lrs: tuple[float, ...] = ()
    models: tuple[ModelShape, ...] = (PRESETS["tiny"],)  # the ladder's shapes, or preset names
    tokens: tuple[float, ...] = ()  # training tokens per run ...
    tokens_per_param: tuple[float, ...] = ()  # ... or tokens per non-embedding parameter
    points: tuple[RunPoint, ...] = ()  # ... or explicit (model, tokens) runs instead of a grid
    # ... or an IsoFLOP design: per budget, each shape trains C / (its FLOPs per token) tokens
    budgets: tuple[Budget, ...] = ()
    per_budget: int = 5  # shapes per budget picked from `models` when a budget names none ...
    # ... around the optimum expected at this many tokens per parameter (N with the head)
    expected_tokens_per_param: float = 20.0
    # approach 2 fits each budget's parabola to this many sizes around its lowest loss (None:
    # to all of them); sizes beyond them still feed L(N, D) (laws.isoflop)
    isoflop_window: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint_every: float = 300.0  # seconds between a running run's checkpoints (0: every step)
    pack: int = 8  # at most this many same-shape runs train together in one vmapped step
    # stop each run after this share of its steps and record the loss L(t) = L_inf + A t^-alpha
    # predicts at its end, marked "predicted" (0: train every run to the end)
    early_stop: float = 0.0
    # shard parameters and optimiser state over the data axis (FSDP) for models with more total
    # parameters than this; smaller models are replicated on every device
    shard_params_above: float = 1e8
    # the test-time compute lab, run after training (a task: corpus only); None: none
    ttc: TTCConfig | None = None

    def runs(self) -> list[RunSpec]:
        """The sweep's runs: smallest model first, then fewest tokens, then each lr and seed.

        A run's name is ``<shape>_D<tokens>``, with ``_lr<lr>`` and ``_s<seed>`` appended when
        the config lists several learning rates or seeds.
        """
        grid: list[tuple[ModelShape, int, float | None]]
        if self.points:
            grid = [(p.model, int(p.tokens), None) for p in self.points]
        elif self.budgets:
            vocab = TOKENIZER_VOCAB[self.tokenizer]
            grid = [
                (shape, int(b.C / flops_per_token_counted(shape, vocab, self.context)), b.C)
                for b in self.budgets
                for shape in (b.models or self.shapes_for(b.C, b.per_budget))
            ]
        else:
            grid = []
            for shape in self.models:
                n = non_embedding_params(shape)
                budgets = self.tokens or tuple(r * n for r in self.tokens_per_param)
                grid += [(shape, int(d), None) for d in budgets]
        grid.sort(key=lambda point: (non_embedding_params(point[0]), point[1]))
        lrs, seeds = self.lrs or (self.train.lr,), self.replica_seeds()
        out = []
        for shape, d, budget in grid:
            for lr in lrs:
                for seed in seeds:
                    name = f"{shape.label}_D{_human(d)}"
                    name += f"_lr{lr:g}" if len(lrs) > 1 else ""
                    name += f"_s{seed}" if len(seeds) > 1 else ""
                    out.append(RunSpec(name, shape, d, seed, lr, budget=budget))
        return out

    def replica_seeds(self) -> tuple[int, ...]:
        """The seeds every run trains with: ``seeds``, else ``replicas`` of them from ``seed``."""
        if self.seeds:
            return self.seeds
        return tuple(self.seed * self.replicas + i for i in range(self.replicas))

    def shapes_for(self, C: float, count: int | None = None) -> tuple[ModelShape, ...]:
        """The ``count`` (default ``per_budget``) shapes of ``models`` nearest (in log N) to the
        optimum expected at budget C, at least two on each side of it when the models allow.

        The expected optimum N* trains ``expected_tokens_per_param`` tokens per parameter:
        C = f(N*)·r·N*, with f the counted FLOPs per token, solved over the models' sizes.
        """
        vocab = TOKENIZER_VOCAB[self.tokenizer]
        shapes = sorted(self.models, key=lambda s: params_with_head(s, vocab))
        n = np.array([params_with_head(s, vocab) for s in shapes], dtype=np.float64)
        f = np.array([flops_per_token_counted(s, vocab, self.context) for s in shapes])
        # C / (f·N) is the tokens per parameter each shape would train: find where it crosses r
        log_r = np.log(C / (f * n)) - math.log(self.expected_tokens_per_param)
        log_n = np.log(n)
        centre = float(np.interp(0.0, -log_r, log_n)) if len(n) > 1 else float(log_n[0])
        k = min(count or self.per_budget, len(n))
        # the window of k consecutive sizes whose mean log N is nearest the expected optimum
        start = min(range(len(n) - k + 1), key=lambda j: abs(log_n[j : j + k].mean() - centre))
        chosen = range(start, start + k)
        return tuple(shapes[i] for i in chosen)

    def fingerprint(self) -> str:
        """A short hash of everything that shapes a run's result except its own (model, tokens)."""
        blob = dataclasses.asdict(self)
        for key in (*RUN_SELECTION, *HOW_NOT_WHAT):
            blob.pop(key)
        if self.lrs:  # each run records its own lr
            blob["train"].pop("lr")
        if blob["train"]["loss_on"] == "all":  # the default: fingerprints from before it stand
            blob["train"].pop("loss_on")
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (recorded with every result)."""
        return dataclasses.asdict(self)


# Keys that choose which runs a sweep holds, not how each is trained: a sweep directory may grow
# by more of them.
RUN_SELECTION = (
    "models",
    "tokens",
    "tokens_per_param",
    "points",
    "budgets",
    "per_budget",
    "expected_tokens_per_param",
    "seeds",
    "replicas",
    "lrs",
)
# Keys that change how runs are executed (or labelled, or analysed) but not their results.
HOW_NOT_WHAT = (
    "name",
    "checkpoint_every",
    "pack",
    "early_stop",
    "shard_params_above",
    "ttc",
    "isoflop_window",
)


def _human(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.4g}{suffix}"
    return f"{n:g}"


# --- loading -------------------------------------------------------------------------------------


def load_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> SweepConfig:
    """Read a YAML sweep config, apply ``key.sub=value`` overrides, build and validate it.

    Args:
      path: the YAML file.
      overrides: strings like ``"train.lr=1e-3"`` (values parsed as YAML).

    Raises:
      ConfigError: a missing file, bad YAML, unknown key, wrong type or impossible value.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys to values")
    for item in overrides:
        _apply_override(raw, item)
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> SweepConfig:
    """Build and validate a SweepConfig from plain data (as read from YAML)."""
    train = raw.get("train")
    if isinstance(train, dict) and isinstance(train.get("lr"), list):  # a pack of lrs
        lrs = train["lr"]
        raw = {**raw, "lrs": lrs, "train": {**train, "lr": lrs[0] if lrs else None}}
    if isinstance(raw.get("budgets"), list):  # `budgets: [1e11, ...]` is short for {C: 1e11}
        raw = {**raw, "budgets": [b if isinstance(b, dict) else {"C": b} for b in raw["budgets"]]}
    cfg = _build(SweepConfig, raw, "")
    validate(cfg)
    return cfg


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. train.lr=1e-3), got {item!r}")
    node = raw
    *parents, leaf = key.strip().split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[leaf] = yaml.safe_load(value)


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"'{where or 'config'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        key = f"{where}{unknown[0]}"
        raise ConfigError(f"unknown key '{key}' (allowed: {', '.join(names)})")
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in raw]
    if missing:
        raise ConfigError(f"missing key '{where}{missing[0]}' (required: {', '.join(required)})")
    return cls(**{name: _coerce(hints[name], raw[name], f"{where}{name}") for name in raw})


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML value to the declared type, or raise a one-line ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # X | None: None, or an X
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(inner, value, key)
    if dataclasses.is_dataclass(tp):
        if tp is ModelShape:
            return _model_shape(value, key)
        return _build(tp, value, f"{key}.")
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(items))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' must be true or false, got {value!r}")
    if tp in (int, float):
        number = _number(value, key)
        if tp is int:
            if not float(number).is_integer():
                raise ConfigError(f"'{key}' must be a whole number, got {value!r}")
            return int(number)
        return float(number)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{key}' must be a string, got {value!r}")
    raise NotImplementedError(f"unsupported config type {tp} for {key}")


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"'{key}' must be a number, got {value!r}")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            number = float(value)  # "1.0e6" and "2e5" arrive from PyYAML as strings
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise ConfigError(f"'{key}' must be a number, got {value!r}")


def _model_shape(value: Any, key: str) -> ModelShape:
    if isinstance(value, str):
        if value not in PRESETS:
            raise ConfigError(f"'{key}': unknown preset {value!r} (allowed: {', '.join(PRESETS)})")
        return PRESETS[value]
    return _build(ModelShape, value, f"{key}.")
