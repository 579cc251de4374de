"""The checks a sweep configuration must pass once it is built (`config.py` builds it): every
impossible value raises ``ConfigError`` with one line naming the key and what is allowed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jaxscale.errors import UserError

if TYPE_CHECKING:
    from jaxscale.config import SweepConfig


class ConfigError(UserError):
    """A bad configuration: one line naming the key and what is allowed."""


SCHEDULES = ("cosine", "constant", "wsd")
DTYPES = ("auto", "float32", "bfloat16")
TOKENIZERS = ("bytes", "gpt2")


def validate(cfg: SweepConfig) -> None:
    """Raise :class:`ConfigError` for the first impossible value of ``cfg`` (types are already
    checked while it is built)."""

    def positive(key: str, value: float) -> None:
        if not value > 0:
            raise ConfigError(f"'{key}' must be positive, got {value}")

    if not cfg.name or "/" in cfg.name:
        raise ConfigError(f"'name' must be a non-empty name without '/', got {cfg.name!r}")
    if cfg.tokenizer not in TOKENIZERS:
        raise ConfigError(
            f"'tokenizer' must be one of {', '.join(TOKENIZERS)}, got {cfg.tokenizer!r}"
        )
    positive("context", cfg.context)
    if not cfg.models and not cfg.points:
        raise ConfigError("'models' must list at least one model shape")
    shapes = [(f"models[{i}]", m) for i, m in enumerate(cfg.models)]
    shapes += [(f"points[{i}].model", p.model) for i, p in enumerate(cfg.points)]
    shapes += [
        (f"budgets[{i}].models[{j}]", m)
        for i, b in enumerate(cfg.budgets)
        for j, m in enumerate(b.models)
    ]
    for where, m in shapes:
        for attr in ("n_layer", "d_model", "n_head"):
            positive(f"{where}.{attr}", getattr(m, attr))
        if m.d_model % m.n_head:
            raise ConfigError(f"'{where}.n_head' ({m.n_head}) must divide d_model ({m.d_model})")
    if sum(map(bool, (cfg.tokens, cfg.tokens_per_param, cfg.points, cfg.budgets))) != 1:
        raise ConfigError(
            "give exactly one of 'tokens' or 'tokens_per_param' (a list of numbers), 'points' "
            "or 'budgets'"
        )
    for i, b in enumerate(cfg.budgets):
        positive(f"budgets[{i}].C", b.C)
        if b.models and b.per_budget is not None:
            raise ConfigError(f"budgets[{i}]: give 'models' or 'per_budget', not both")
    picked = [
        (f"budgets[{i}].per_budget", b.per_budget) if b.per_budget is not None
        else ("per_budget", cfg.per_budget)
        for i, b in enumerate(cfg.budgets) if not b.models
    ]  # fmt: skip
    for where, count in picked:
        if count < 3:
            raise ConfigError(f"'{where}' must be at least 3 (a parabola), got {count}")
        if len(cfg.models) < count:
            raise ConfigError(
                f"'models' lists {len(cfg.models)} shapes, fewer than {where} ({count}) for the "
                "budgets that name none"
            )
    if picked:
        positive("expected_tokens_per_param", cfg.expected_tokens_per_param)
    if cfg.isoflop_window is not None and cfg.isoflop_window < 3:
        raise ConfigError(
            f"'isoflop_window' must be at least 3 (a parabola), got {cfg.isoflop_window}"
        )
    for i, p in enumerate(cfg.points):
        positive(f"points[{i}].tokens", p.tokens)
    for i, t in enumerate(cfg.tokens):
        positive(f"tokens[{i}]", t)
    for i, t in enumerate(cfg.tokens_per_param):
        positive(f"tokens_per_param[{i}]", t)
    t = cfg.train
    for key in ("batch_size", "lr", "accum", "evals"):
        positive(f"train.{key}", getattr(t, key))
    for key in ("min_steps", "warmup_per_param", "lr_ref_width", "lr_width_power"):
        if getattr(t, key) < 0:
            raise ConfigError(f"'train.{key}' must be >= 0 (0: off), got {getattr(t, key)}")
    if t.schedule == "wsd" and t.min_steps:
        raise ConfigError(
            "'train.min_steps' sets a batch per run, and a WSD column shares one: "
            "use it with cosine or constant schedules"
        )
    if t.batch_size % t.accum:
        raise ConfigError(f"'train.accum' ({t.accum}) must divide batch_size ({t.batch_size})")
    if not 0 <= t.warmup < 1:
        raise ConfigError(f"'train.warmup' is a fraction of the run in [0, 1), got {t.warmup}")
    if not 0 <= t.min_lr_ratio <= 1:
        raise ConfigError(f"'train.min_lr_ratio' must be in [0, 1], got {t.min_lr_ratio}")
    if t.schedule not in SCHEDULES:
        raise ConfigError(
            f"'train.schedule' must be one of {', '.join(SCHEDULES)}, got {t.schedule!r}"
        )
    if t.dtype not in DTYPES:
        raise ConfigError(f"'train.dtype' must be one of {', '.join(DTYPES)}, got {t.dtype!r}")
    for key in ("weight_decay", "grad_clip"):
        if getattr(t, key) < 0:
            raise ConfigError(f"'train.{key}' must be >= 0, got {getattr(t, key)}")
    for key in ("beta1", "beta2"):
        if not 0 <= getattr(t, key) < 1:
            raise ConfigError(f"'train.{key}' must be in [0, 1), got {getattr(t, key)}")
    for i, lr in enumerate(cfg.lrs):
        positive(f"train.lr[{i}]", lr)
    positive("replicas", cfg.replicas)
    if cfg.seeds and cfg.replicas > 1:
        raise ConfigError("give 'seeds' or 'replicas', not both")
    if len(set(cfg.lrs)) != len(cfg.lrs) or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError("'train.lr' and 'seeds' must not repeat a value")
    positive("pack", cfg.pack)
    if not 0 <= cfg.early_stop < 1:
        raise ConfigError(f"'early_stop' is a share of each run in [0, 1), got {cfg.early_stop}")
    if t.schedule == "wsd" and not 0.1 <= t.decay < 1 - t.warmup:
        raise ConfigError(
            f"'train.decay' must be in [0.1, 1 - warmup) for schedule wsd, got {t.decay}"
        )
    if t.schedule == "wsd" and cfg.early_stop:
        raise ConfigError("'early_stop' and schedule 'wsd' do not combine: choose one")
    if cfg.checkpoint_every < 0:
        raise ConfigError(f"'checkpoint_every' must be >= 0 seconds, got {cfg.checkpoint_every}")
    positive("eval.tokens", cfg.eval.tokens)
    positive("eval.batch_size", cfg.eval.batch_size)
    names = [r.name for r in cfg.runs()]
    if len(set(names)) != len(names):
        raise ConfigError("two runs share a name: the models or token counts repeat")
    _validate_task(cfg)


def _validate_task(cfg: SweepConfig) -> None:
    """The task corpus, ``train.loss_on`` and the ``ttc`` section."""
    from jaxscale.errors import DataError
    from jaxscale.tasks import Problem, Task

    task = None
    if cfg.corpus.startswith("task:"):
        try:
            task = Task.parse(cfg.corpus.removeprefix("task:"))
        except DataError as e:
            raise ConfigError(f"'corpus': {e}") from None
        if cfg.tokenizer != "bytes":
            raise ConfigError(f"a task corpus needs tokenizer bytes, got {cfg.tokenizer!r}")
    if cfg.train.loss_on not in ("all", "answer"):
        raise ConfigError(f"'train.loss_on' must be all or answer, got {cfg.train.loss_on!r}")
    if cfg.train.loss_on == "answer" and task is None:
        raise ConfigError("'train.loss_on: answer' needs a task: corpus (answers to mask)")
    t = cfg.ttc
    if t is None:
        return
    if task is None:
        raise ConfigError(f"'ttc' needs a task: corpus to check answers, got {cfg.corpus!r}")
    if cfg.train.schedule == "wsd":
        raise ConfigError("'ttc' samples each run's final parameters: use cosine or constant")
    probe = Problem(0, 0, task.op, 0 if task.skills else None)  # every prompt is this long
    need = len(task.prompt(probe)) + task.max_completion()
    if cfg.context < need:
        raise ConfigError(
            f"'context' ({cfg.context}) must hold a prompt and its longest completion ({need})"
        )
    if not t.k or any(k < 1 for k in t.k) or len(set(t.k)) != len(t.k):
        raise ConfigError(f"'ttc.k' must list distinct positive sample counts, got {list(t.k)}")
    if t.samples < max(t.k):
        raise ConfigError(
            f"'ttc.samples' ({t.samples}) must be at least the largest k ({max(t.k)})"
        )
    if not t.temperature >= 0:
        raise ConfigError(f"'ttc.temperature' must be >= 0 (0: greedy), got {t.temperature}")
    if t.top_k < 0:
        raise ConfigError(f"'ttc.top_k' must be >= 0 (0: off), got {t.top_k}")
    if not 0 < t.top_p <= 1:
        raise ConfigError(f"'ttc.top_p' must be in (0, 1], got {t.top_p}")
    if not 1 <= t.test_problems <= task.test:
        raise ConfigError(
            f"'ttc.test_problems' must be in 1..{task.test} (the task's test set), "
            f"got {t.test_problems}"
        )
    if not t.levels or any(not 0 < v < 1 for v in t.levels):
        raise ConfigError(f"'ttc.levels' must list accuracies in (0, 1), got {list(t.levels)}")
    for key in ("batch_rows",):
        if getattr(t, key) < 1:
            raise ConfigError(f"'ttc.{key}' must be positive, got {getattr(t, key)}")
    if t.bootstrap < 0:
        raise ConfigError(f"'ttc.bootstrap' must be >= 0, got {t.bootstrap}")
