"""Training: the schedule ends with the run, accumulation is exact, loss nears a known truth."""

import itertools
import math

import jax
import numpy as np
import pytest

from jaxscale.backend import cpu_micro_tokens, l2_cache_bytes, micro_batch_tokens, pack_mesh
from jaxscale.config import EvalConfig, RunSpec, TrainConfig
from jaxscale.counting import ModelShape
from jaxscale.data import eval_batches, load_corpus
from jaxscale.model import init_model, token_nats
from jaxscale.train import (
    AdamW,
    evaluate,
    lr_schedule,
    make_optimizer,
    micro_batches,
    step,
    train_run,
    train_step,
)


def test_cosine_schedule_spans_exactly_the_run() -> None:
    cfg = TrainConfig(lr=1e-3, warmup=0.1, min_lr_ratio=0.1)
    schedule = lr_schedule(cfg, 100)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1e-3)  # warmup ends at 10% of the steps
    assert float(schedule(100)) == pytest.approx(1e-4)  # the decay ends on the last step
    lrs = [float(schedule(i)) for i in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_gradient_accumulation_matches_one_big_batch() -> None:
    shape = ModelShape(1, 32, 2)
    batch = np.random.default_rng(0).integers(0, 64, (8, 17)).astype(np.int32)
    out = []
    for accum in (1, 4):
        cfg = TrainConfig(accum=accum, batch_size=8)
        graphdef, params = init_model(shape, 64, 16, seed=0)
        opt_state = make_optimizer(cfg).init(params)
        params, _, metrics = train_step(
            params, opt_state, batch, 1e-2, graphdef=graphdef, opt=AdamW.of(cfg), accum=accum
        )
        out.append((float(metrics["loss"]), float(metrics["grad_norm"])))
    # the accumulated mean gradient is the big batch's: same loss, same gradient norm
    assert out[0] == pytest.approx(out[1], rel=1e-5)


def test_cpu_steps_split_their_batch_into_cache_sized_micro_batches(monkeypatch) -> None:
    """On CPU each device works through at most 512 tokens at a time (``micro_batch_tokens``),
    in a whole number of micro-batches that is a multiple of the configured ``accum``."""
    monkeypatch.setattr(step, "micro_batch_tokens", lambda: 512)
    # 16 rows a device: 2 of 256 tokens a micro-batch, 4 of 128, 1 of 1024 (it cannot go lower)
    assert micro_batches(TrainConfig(batch_size=32), 256, 2) == 8
    assert micro_batches(TrainConfig(batch_size=32), 128, 2) == 4
    assert micro_batches(TrainConfig(batch_size=32), 1024, 2) == 16
    assert micro_batches(TrainConfig(batch_size=32), 256, 1) == 16
    # 10 rows at 256 tokens want 5 micro-batches; a multiple of accum=2 that divides 10: 10
    assert micro_batches(TrainConfig(batch_size=20, accum=2), 256, 2) == 10
    # an accum that does not divide a device's rows is kept as it is
    assert micro_batches(TrainConfig(batch_size=12, accum=4), 256, 2) == 4
    # accelerators take the whole batch (or the configured accum)
    monkeypatch.setattr(step, "micro_batch_tokens", lambda: None)
    assert micro_batches(TrainConfig(batch_size=32, accum=2), 256, 2) == 2


def test_validation_in_micro_batches_is_the_plain_mean(monkeypatch) -> None:
    """``evaluate`` splits each validation batch into micro-batches (here 64 tokens a piece, the
    short last batch too); its loss is still the mean nats over every held-out token."""
    monkeypatch.setattr(step, "micro_batch_tokens", lambda: 64)
    corpus = load_corpus("synthetic:order=1,symbols=16,tokens=100000", progress=False)
    context, cfg = 16, EvalConfig(tokens=1_000, batch_size=16)
    graphdef, params = init_model(ModelShape(1, 32, 2), corpus.n_vocab, context, seed=0)
    batches = list(eval_batches(corpus.val, batch_size=16, context=context, max_tokens=1_000))
    assert len({b.shape[0] for b in batches}) == 2  # a short last batch is part of the check
    nats = np.concatenate([np.ravel(token_nats(graphdef, params, b)) for b in batches])
    stacked = jax.tree.map(lambda x: x[None], params)
    loss = evaluate(graphdef, stacked, corpus, context, cfg, pack_mesh(1, 16))
    assert loss.shape == (1,) and loss[0] == pytest.approx(nats.mean(), rel=1e-5)


def test_loss_approaches_the_synthetic_corpus_entropy() -> None:
    """A Markov chain's exact entropy rate is the floor of the loss; a small model nears it."""
    corpus = load_corpus("synthetic:order=1,symbols=16,tokens=1000000", progress=False)
    assert corpus.entropy is not None
    spec = RunSpec("s", ModelShape(1, 32, 2), tokens=600_000, seed=0)
    out = train_run(
        spec,
        corpus,
        context=32,
        train=TrainConfig(batch_size=32, lr=1e-2, evals=3),
        eval_cfg=EvalConfig(tokens=100_000),
    )
    assert out.diverged_at is None and len(out.curve) == 3
    assert out.curve[0][1] > out.curve[-1][1]
    # within 3% of the truth, and not below it beyond the held-out sample's noise
    assert corpus.entropy - 0.02 < out.loss < corpus.entropy * 1.03
    assert math.isfinite(out.tokens_per_s) and out.tokens == out.steps * 32 * 32


def test_a_nan_is_caught_at_its_step() -> None:
    corpus = load_corpus("synthetic:order=1,symbols=16,tokens=200000", progress=False)
    spec = RunSpec("s", ModelShape(1, 16, 2), tokens=20_000, seed=0)
    out = train_run(
        spec,
        corpus,
        context=16,
        train=TrainConfig(batch_size=8, lr=1e9, grad_clip=0.0, warmup=0.0),
        eval_cfg=EvalConfig(tokens=1000),
    )
    assert out.diverged_at is not None and math.isnan(out.loss)


def test_cpu_micro_batches_follow_the_machines_l2_cache(monkeypatch) -> None:
    """One token per KiB of a core's L2, a power of two in [256, 4096]: the AMD EPYC's 512 KiB
    keeps its tuned 512 tokens, a 2 MiB Xeon gets 2,048; the environment overrides the rule."""
    sizes = [None, 256 * 1024, 512 * 1024, 1024**2, 1536 * 1024, 2 * 1024**2, 64 * 1024**2]
    assert [cpu_micro_tokens(b) for b in sizes] == [512, 256, 512, 1024, 1024, 2048, 4096]
    assert micro_batch_tokens() == cpu_micro_tokens(l2_cache_bytes())  # tests run on CPU
    monkeypatch.setenv("JAXSCALE_CPU_MICRO_TOKENS", "768")
    assert micro_batch_tokens() == 768
