"""Evaluate one trained model on a task's test problems: sampled, greedy and teacher-forced.

For each problem: ``n`` sampled completions (``jaxscale.sample.generate``) checked exactly
(``Task.check``), their answer histogram, one greedy completion, the log-probability of the
correct completion (teacher-forced, its closing newline included) and the token edit distance
of the greedy completion to it. Everything a model's summary reports is recomputable from these
per-problem lines (``summarize``).

Example:
    >>> lines, samples = evaluate_problems(task, problems, graphdef, params, TTCConfig())
    ... # doctest: +SKIP
    >>> summarize(lines, [1, 2, 4])["pass_at_k"]["4"]      # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxscale.backend import compute_dtype
from jaxscale.checkpoint import RunCheckpoints
from jaxscale.config import TTCConfig
from jaxscale.errors import UserError
from jaxscale.estimators import NULL, edit_distance, maj_at_ks, pass_at_k
from jaxscale.model import init_model, logits_fn
from jaxscale.planner import SweepPlan
from jaxscale.sample import generate
from jaxscale.tasks import Problem, Task
from jaxscale.train.step import make_optimizer

STOP = ord("\n")


def _tokens(text: str) -> list[int]:
    return list(text.encode())


def _text(tokens: Sequence[int]) -> str:
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


def load_final_params(plan: SweepPlan, out_dir: Path, run: str) -> tuple[nnx.GraphDef, nnx.State]:
    """A finished run's final parameters, from the last checkpoint of the job that trained it.

    A job's checkpoint holds its pack's stacked ``(params, opt_state)`` (``train.pack``); the
    run's slot is taken out of it. The job is looked up as the plan packs the sweep's runs from
    scratch (a run trained alone keeps its checkpoints in its own directory).

    Raises:
      UserError: no readable checkpoint holds the run.
    """
    from jaxscale.jobs import job_dir  # lazy: jobs imports the training loop

    cfg = plan.config
    vocab = 256 if cfg.tokenizer == "bytes" else 50257

    def restore(where: Path, specs: Sequence[Any]) -> tuple[nnx.GraphDef, nnx.State] | None:
        if not (where / "checkpoints").is_dir():
            return None
        train = specs[0].train
        dtype = compute_dtype(train.dtype)
        models = [init_model(s.shape, vocab, cfg.context, s.seed, dtype) for s in specs]
        params = jax.tree.map(lambda *xs: jnp.stack(xs), *(p for _, p in models))
        like = (params, jax.vmap(make_optimizer(train).init)(params))
        ckpt = RunCheckpoints(where / "checkpoints", every_s=1e9)
        try:
            with warnings.catch_warnings():  # a pack's checkpoint is not a lone run's
                warnings.simplefilter("ignore")
                got = ckpt.restore(like=like)
        finally:
            ckpt.close()
        if got is None:
            return None
        j = [s.name for s in specs].index(run)
        return models[j][0], jax.tree.map(lambda x: x[j], got[1][0])

    for job in plan.jobs(done=set()):
        specs = [s for s in job.specs if s.name == run]
        if specs:  # the run's pack as planned, else the run alone in its own directory
            found = restore(job_dir(out_dir, job), job.specs) or restore(
                out_dir / "runs" / run, specs
            )
            if found:
                return found
    raise UserError(f"no checkpoint of run {run} in {out_dir}; train it first (jaxscale sweep)")


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _completion_logprob(
    params: nnx.State, seq_BxL: jax.Array, mask_BxL: jax.Array, *, graphdef: nnx.GraphDef
) -> jax.Array:
    """Σ log p(seq[t] | seq[:t]) over the targets ``mask`` marks, per row."""
    logits = logits_fn(graphdef, params, seq_BxL[:, :-1])
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, seq_BxL[:, 1:, None], axis=-1)[..., 0]
    return jnp.where(mask_BxL[:, 1:], picked, 0.0).sum(axis=1)


def answer_logprobs(
    task: Task, problems: Sequence[Problem], graphdef: nnx.GraphDef, params: nnx.State
) -> np.ndarray:
    """log p(correct completion + newline | prompt) of each problem, in nats (teacher-forced)."""
    prompts = [_tokens(task.prompt(p)) for p in problems]
    targets = [_tokens(task.completion(p) + "\n") for p in problems]
    width = max(len(a) + len(b) for a, b in zip(prompts, targets, strict=True))
    seq = np.zeros((len(problems), width), np.int32)
    mask = np.zeros((len(problems), width), bool)
    for i, (a, b) in enumerate(zip(prompts, targets, strict=True)):
        seq[i, : len(a) + len(b)] = a + b
        mask[i, len(a) : len(a) + len(b)] = True
    return np.asarray(_completion_logprob(params, seq, mask, graphdef=graphdef))


def _decode(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prompts: np.ndarray,
    task: Task,
    cfg: TTCConfig,
    key: jax.Array,
    temperature: float,
) -> list[list[int]]:
    """Completions (stop token excluded) of every prompt row, ``cfg.batch_rows`` at a time.

    The last chunk is padded to a full one, so one compiled loop serves every chunk.
    """
    rows = min(cfg.batch_rows, len(prompts))
    out: list[list[int]] = []
    for i, start in enumerate(range(0, len(prompts), rows)):
        chunk = prompts[start : start + rows]
        padded = np.concatenate([chunk, np.repeat(chunk[:1], rows - len(chunk), 0)])
        gen = generate(
            graphdef,
            params,
            padded,
            max_new=task.max_completion(),
            key=jax.random.fold_in(key, i),
            temperature=temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            stop=STOP,
        )
        tokens, lengths = np.asarray(gen.tokens), np.asarray(gen.lengths)
        for r in range(len(chunk)):
            row = tokens[r, : lengths[r]].tolist()
            out.append(row[:-1] if row and row[-1] == STOP else row)
    return out


def evaluate_problems(
    task: Task,
    problems: Sequence[Problem],
    graphdef: nnx.GraphDef,
    params: nnx.State,
    cfg: TTCConfig,
    keep_samples: int = 20,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-problem lines and the raw generations of the first ``keep_samples`` problems.

    A line holds ``problem`` (the prompt), ``operands``, ``op``, ``answer``, ``n``,
    ``correct``, ``answers`` (parsed answer -> count, ``"null"`` for unparsable), ``skill``
    (a skills task only: the index of the skill whose hidden constant is b), and the
    greedy and teacher-forced measures: ``greedy``, ``greedy_correct``, ``answer_logprob``,
    ``edit_distance``, ``generated_tokens`` (summed over the n samples, stop tokens included).

    Example:
      >>> lines, raw = evaluate_problems(task, task.split().test[:10], g, p, TTCConfig(samples=4))
      ... # doctest: +SKIP
    """
    n = cfg.samples
    prompts = np.array([_tokens(task.prompt(p)) for p in problems], np.int32)
    key = jax.random.key(cfg.seed)
    sampled = _decode(graphdef, params, np.repeat(prompts, n, 0), task, cfg, key, cfg.temperature)
    greedy = _decode(graphdef, params, prompts, task, cfg, key, 0.0)
    logprobs = answer_logprobs(task, problems, graphdef, params)
    lines, raw = [], []
    for i, p in enumerate(problems):
        texts = [_text(t) for t in sampled[i * n : (i + 1) * n]]
        parsed = [task.parse_answer(t) for t in texts]
        hist = Counter(NULL if a is None else str(a) for a in parsed)
        g_text = _text(greedy[i])
        lines.append(
            {
                "problem": task.prompt(p).lstrip("\n"),
                "operands": [p.a, p.b],
                "op": p.op,
                "answer": p.answer,
                "n": n,
                "correct": sum(a == p.answer for a in parsed),
                "answers": dict(hist.most_common()),
                "greedy": task.parse_answer(g_text),
                "greedy_correct": task.check(p, g_text),
                "answer_logprob": float(logprobs[i]),
                "edit_distance": edit_distance(greedy[i], _tokens(task.completion(p))),
                # a sample's tokens include its stop token when it emitted one
                "generated_tokens": sum(len(t) for t in sampled[i * n : (i + 1) * n])
                + sum(len(t) < task.max_completion() for t in sampled[i * n : (i + 1) * n]),
            }
        )
        if p.skill is not None:  # a skills task: which hidden constant b is
            lines[-1]["skill"] = p.skill
        if i < keep_samples:
            raw += [
                {"problem": lines[-1]["problem"], "text": t, "parsed": a, "correct": a == p.answer}
                for t, a in zip(texts, parsed, strict=True)
            ]
    return lines, raw


def summarize(lines: Sequence[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    """A model's estimates from its per-problem lines: means over problems of pass@k (Chen et
    al.), exact maj@k, greedy exact match, answer log-probability, edit distance, and the mean
    tokens generated per sample.

    Example:
      >>> summarize([{"n": 2, "correct": 1, "answers": {"3": 1, "null": 1}, "answer": 3,
      ...             "greedy_correct": True, "answer_logprob": -0.5, "edit_distance": 0,
      ...             "generated_tokens": 6}], [1, 2])["pass_at_k"]
      {'1': 0.5, '2': 1.0}
    """
    if not lines:
        raise ValueError("no problems to summarize")
    ks = list(ks)
    maj = [maj_at_ks(line["answers"], str(line["answer"]), ks) for line in lines]
    n_samples = sum(line["n"] for line in lines)
    return {
        "pass_at_k": {
            str(k): float(np.mean([pass_at_k(li["n"], li["correct"], k) for li in lines]))
            for k in ks
        },
        "maj_at_k": {str(k): float(np.mean([m[k] for m in maj])) for k in ks},
        "greedy_exact_match": float(np.mean([li["greedy_correct"] for li in lines])),
        "answer_logprob": float(np.mean([li["answer_logprob"] for li in lines])),
        "edit_distance": float(np.mean([li["edit_distance"] for li in lines])),
        "tokens_per_sample": sum(li["generated_tokens"] for li in lines) / n_samples,
    }


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` as JSON lines, written to a temporary file and renamed (a crash leaves none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path``."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
