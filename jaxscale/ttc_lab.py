"""The test-time compute lab of a sweep: evaluate every trained model with sampling, fit, and
write ``DIR/ttc.json``, ``DIR/ttc/<run>.jsonl``, figures and ``DIR/ttc.md`` (a section of the
report).

Run by ``jaxscale sweep CONFIG`` when the config has a ``ttc:`` section, after training.
Resumable per run: a run whose ``ttc/<run>.jsonl`` exists (and is newer than the run's
``result.json``) is read back, not sampled again.

Example:
    >>> result = run_ttc(load_config("configs/ttc.yaml"), Path("reports/ttc"))  # doctest: +SKIP
    >>> result["law"]["beta"], result["trade"]["test_per_train_decade"]        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from jaxscale.config import SweepConfig
from jaxscale.machine import provenance
from jaxscale.planner import plan_sweep
from jaxscale.sample import decode_speed
from jaxscale.sweep import collect_records
from jaxscale.tasks import Task
from jaxscale.ttc_eval import (
    evaluate_problems,
    load_final_params,
    read_jsonl,
    summarize,
    write_jsonl,
)
from jaxscale.ttc_fits import (
    coverage_fit,
    law_fit,
    matches,
    pass_curve,
    require_models,
    statement,
    trade,
    ttc_warnings,
)

TTC_FILE = "ttc.json"


def run_ttc(
    cfg: SweepConfig,
    out_dir: Path,
    *,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate, fit and write the lab's outputs for the finished runs of ``cfg`` in ``out_dir``.

    Returns:
      The ``ttc.json`` record.

    Raises:
      UserError: no finished run, or a run's checkpoint is missing.
    """
    assert cfg.ttc is not None, "run_ttc needs a config with a ttc: section"
    t = cfg.ttc
    t0 = time.perf_counter()
    plan = plan_sweep(cfg)
    task = Task.parse(cfg.corpus.removeprefix("task:"))
    problems = task.split().test[: t.test_problems]
    order = {s.name: i for i, s in enumerate(plan.runs)}
    records = sorted(
        (r for r in collect_records(out_dir) if r["run"] in order and r["status"] == "ok"),
        key=lambda r: order[r["run"]],
    )
    require_models(records)
    folder = out_dir / "ttc"
    lines_of: dict[str, list[dict[str, Any]]] = {}
    largest = None
    bar = tqdm(records, desc="ttc: sampling", disable=not progress, unit="model")
    for r in bar:
        path = folder / f"{r['run']}.jsonl"
        result = out_dir / "runs" / r["run"] / "result.json"
        # evaluated already, after the run's last training (a retrained run is sampled again)
        if path.exists() and (
            not result.exists() or path.stat().st_mtime >= result.stat().st_mtime
        ):
            lines_of[r["run"]] = read_jsonl(path)
            continue
        bar.set_postfix_str(r["run"])
        graphdef, params = load_final_params(plan, out_dir, r["run"])
        lines, raw = evaluate_problems(task, problems, graphdef, params, t)
        write_jsonl(folder / f"{r['run']}.samples.jsonl", raw)
        write_jsonl(path, lines)  # last: its presence marks the run evaluated
        lines_of[r["run"]] = lines
    # decode speed, measured on the largest model at the lab's batch
    largest = records[-1]["run"]
    graphdef, params = load_final_params(plan, out_dir, largest)
    prompts = np.array([list(task.prompt(p).encode()) for p in problems], np.int32)
    rows = min(t.batch_rows, len(problems) * t.samples)
    speed = decode_speed(graphdef, params, np.resize(prompts, (rows, prompts.shape[1])),
                         task.max_completion())  # fmt: skip

    ks = sorted(t.k)
    models = []
    for r in records:
        s = summarize(lines_of[r["run"]], ks)
        models.append(
            {
                "run": r["run"],
                "N": r["N"],
                "D": r["D"],
                "train_flops": 6.0 * r["N"] * r["D"],
                **s,
                "inference_flops_per_sample": 2.0 * r["N"] * s["tokens_per_sample"],
                "val_loss": r["loss"],
            }
        )
    for m in models:
        m["coverage_fit"] = coverage_fit(ks, [m["pass_at_k"][str(k)] for k in ks])
    law, law_result = law_fit(models, t.bootstrap, t.seed)
    curves = [pass_curve(lines_of[m["run"]]) for m in models]
    traded = trade(models, curves, t.levels, t.bootstrap, t.seed)
    pairs = matches(models, curves, len(problems), t.bootstrap, t.seed)
    # the statement: the largest size ratio among pairs the smaller model needs >= 2 samples for
    # (one sample is no trade), else among all pairs
    best = max([p for p in pairs if p["samples"] >= 2] or pairs, key=lambda p: p["N_ratio"],
               default=None)  # fmt: skip
    split = task.split()
    corpus_fp = {r.get("corpus_fingerprint") for r in records}
    result = {
        "task": task.spec(),
        "test_problems": len(problems),
        "samples_per_problem": t.samples,
        "k": ks,
        "temperature": t.temperature,
        "top_k": t.top_k,
        "top_p": t.top_p,
        "loss_on": cfg.train.loss_on,
        "models": models,
        "law": law,
        "trade": traded,
        "matches": pairs,
        "statement": statement(best),
        "decode_tokens_per_s": speed,
        "decode_batch": rows,
        "conventions": {
            "N": "non-embedding parameters",
            "train_flops": "6·N·D",
            "inference_flops": "2·N·T, T = tokens generated per problem (samples x tokens)",
            "pass_at_k": "unbiased estimator of Chen et al. 2021, mean over problems",
            "maj_at_k": "exact expectation over size-k subsets; unparsable samples do not vote; "
            "ties broken uniformly",
            "answer_logprob": "log p(correct completion + newline | prompt), nats, teacher-forced",
            "edit_distance": "Levenshtein distance in tokens, greedy vs correct completion",
        },
        "provenance": {
            **provenance(),
            "task_fingerprint": split.fingerprint,
            "corpus_fingerprint": sorted(x for x in corpus_fp if x),
            "config_fingerprint": plan.fingerprint,
            "ttc_fingerprint": hashlib.sha256(
                json.dumps(cfg.to_dict()["ttc"], sort_keys=True).encode()
            ).hexdigest()[:12],
        },
        "wall_s": time.perf_counter() - t0,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    result["warnings"] = ttc_warnings(result)
    (out_dir / TTC_FILE).write_text(json.dumps(result, indent=1) + "\n")
    from jaxscale.ttc_report import ttc_figures, ttc_markdown  # lazy: matplotlib

    figures = ttc_figures(result, curves, law_result, out_dir)
    (out_dir / "ttc.md").write_text("\n".join(ttc_markdown(result, figures)) + "\n")
    say(summary_lines(result))
    return result


def summary_lines(result: dict[str, Any]) -> str:
    """A few lines for the terminal: the law, the trade, the statement, the decode speed."""
    law, tr = result["law"], result["trade"]
    out = []
    if law["alpha"] is not None:
        ci = law["ci"] or {}
        b = ci.get("beta")
        out.append(
            f"Accuracy(N, T) = {law['alpha']:.3g}·(N·T)^{law['beta']:.3f}"
            + (f" (beta 95% CI [{b[0]:.3f}, {b[1]:.3f}])" if b else "")
            + f", R² {law['r2']:.3f}"
        )
    if tr["test_per_train_decade"] is not None:
        ci = tr["ci"]
        out.append(
            f"train/test trade: each decade of train compute saves "
            f"{tr['test_per_train_decade']:.3g}x test compute"
            + (f" (95% CI [{ci[0]:.3g}, {ci[1]:.3g}])" if ci else "")
        )
    out.append(result["statement"])
    out.append(f"decode: {result['decode_tokens_per_s']:,.0f} tokens/s")
    out += [f"warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(out)


def recompute_pass_at_k(lines: Sequence[dict[str, Any]], ks: Sequence[int]) -> dict[str, float]:
    """pass@k from a run's per-problem counts alone (what anyone can check ttc.json against)."""
    return summarize(lines, ks)["pass_at_k"]
