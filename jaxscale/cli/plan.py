"""``jaxscale isoflop``, ``plan`` and ``predict``: decisions from a fitted or published law.

Every number a user gives is checked (finite, positive, within its range) before anything is
computed. The library is imported inside the commands, so that their help answers at once.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import click

from jaxscale.cli.options import JSON_OPTION, LAW_OPTION, POSITIVE, Finite, given, write_json
from jaxscale.errors import UserError


def _law_of(name: str, needs: str = "N and D") -> Any:
    """The law ``name``, refused unless it is a law of N and D (and maybe U) like those the
    planning commands evaluate."""
    from jaxscale.laws import load_law

    law = load_law(name)
    if law.variables[:2] != ("N", "D"):
        raise UserError(
            f"{name} is a {type(law).__name__} law of {', '.join(law.variables)}; "
            f"this command needs a law of {needs}"
        )
    return law


def _optimal(law: Any, C: float, law_name: str) -> Any:
    """The compute-optimal allocation at C, refused when the budget buys less than one
    parameter or one token (the law's answer there is no model at all)."""
    from jaxscale.laws import compute_optimal

    if "U" in law.variables:
        raise UserError(
            f"{law_name} is data-constrained: plan with it by unique tokens, "
            f"jaxscale plan --C {C:g} --unique-tokens U --law {law_name}"
        )
    al = compute_optimal(law, C)
    if min(al.N_opt, al.D_opt) < 1:
        raise UserError(
            f"C = {C:.3g} FLOPs buys N_opt = {al.N_opt:.3g} parameters and D_opt = {al.D_opt:.3g} "
            "tokens under this law: less than one of each; give a larger budget"
        )
    return al


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


@click.command()
@click.option("--C", "C", type=POSITIVE, required=True, help="Compute budget in FLOPs.")
@LAW_OPTION
@JSON_OPTION
@click.option("--run", is_flag=True, help="Train the shapes below at this budget as a sweep.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="With --run: corpus and training settings (its models and tokens are replaced).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --run: the sweep directory (default reports/isoflop-<C>/).",
)
def isoflop(
    C: float,
    law_name: str,
    json_path: Path | None,
    run: bool,
    config_path: Path | None,
    out: Path | None,
) -> None:
    """The compute-optimal model at budget --C, its IsoFLOP profile and concrete shapes."""
    from jaxscale import counting, machine
    from jaxscale.laws import isoflop_profile

    if not run and (config_path or out):
        raise UserError("--config and --out apply with --run")
    law = _law_of(law_name)
    al = _optimal(law, C, law_name)
    click.echo(
        f"C = {C:.3g} FLOPs ({law_name}): N_opt = {al.N_opt:.3g}, D_opt = {al.D_opt:.3g}, "
        f"{al.tokens_per_param:.1f} tokens/param, predicted loss {al.loss:.4f}"
    )
    profile = isoflop_profile(law, C, al.N_opt)
    click.echo(f"\nIsoFLOP profile\n  {'N/N_opt':>8} {'N':>10} {'D':>10} {'loss':>8}")
    for row in profile:
        click.echo(
            f"  {row['factor']:>8.2f} {row['N']:>10.3g} {row['D']:>10.3g} {row['loss']:>8.4f}"
        )
    flops_per_s = machine.measured_flops_per_s()
    shapes = []
    click.echo(
        f"\nShapes near N_opt (N non-embedding)\n  {'shape':<14} {'N':>10} {'D':>10}"
        + ("  est. time" if flops_per_s else "")
    )
    near = counting.shapes_near(al.N_opt)
    for s in near:
        n = counting.non_embedding_params(s)
        row = {
            "shape": s.label,
            "n_layer": s.n_layer,
            "d_model": s.d_model,
            "n_head": s.n_head,
            "N": n,
            "D": C / (6 * n),
        }
        line = f"  {s.label:<14} {n:>10.3g} {row['D']:>10.3g}"
        if flops_per_s:
            row["hours"] = C / flops_per_s / 3600
            line += f"  {_duration(row['hours'] * 3600)}"
        shapes.append(row)
        click.echo(line)
    if not flops_per_s:
        click.echo("(wall time unknown: no throughput measured on this machine yet)")
    payload = {**al.to_dict(), "law": law_name, "profile": profile, "shapes": shapes}
    write_json(json_path, {**payload, "flops_per_s": flops_per_s})
    if run:
        from jaxscale.cli.lab import echo_report
        from jaxscale.config import SweepConfig, config_from_dict, load_config
        from jaxscale.sweep import default_out_dir, run_sweep

        base = load_config(config_path) if config_path else SweepConfig()
        points = [{"model": dataclasses.asdict(s), "tokens": C / (6 * r["N"])}
                  for s, r in zip(near, shapes, strict=True)]  # fmt: skip
        name = f"isoflop-{C:.3g}"
        cfg = config_from_dict(
            {**base.to_dict(), "name": name, "tokens": [], "tokens_per_param": [], "points": points}
        )
        out_dir = out or default_out_dir(cfg)
        run_sweep(cfg, out_dir)
        echo_report(out_dir)


@click.command()
@click.option("--C", "C", type=POSITIVE, default=None, help="Compute budget in FLOPs.")
@click.option("--gpu", default=None, help="GPU type, e.g. H100 (an unknown one lists the known).")
@click.option("--gpus", type=click.IntRange(min=1, max=10**9), default=1, show_default=True)
@click.option("--hours", type=POSITIVE, default=None, help="Wall-clock hours of training.")
@click.option("--mfu", type=Finite(0, 1, min_open=True), default=0.4, show_default=True)
@click.option("--price", type=Finite(min=0), default=None, help="$ per GPU-hour.")
@click.option(
    "--inference-tokens",
    type=POSITIVE,
    default=None,
    help="Tokens to be served over the model's life (Sardana et al. 2023).",
)
@click.option(
    "--unique-tokens",
    type=POSITIVE,
    default=None,
    help="Unique tokens your corpus has: the plan repeats them (Muennighoff et al. 2023).",
)
@LAW_OPTION
@JSON_OPTION
@click.pass_context
def plan(
    ctx: click.Context,
    C: float | None,
    gpu: str | None,
    gpus: int,
    hours: float | None,
    mfu: float,
    price: float | None,
    inference_tokens: float | None,
    unique_tokens: float | None,
    law_name: str,
    json_path: Path | None,
) -> None:
    """Plan a training run from a budget: --C, or --gpu/--gpus/--hours [--mfu], and optionally
    the corpus it must come from (--unique-tokens)."""
    from jaxscale.laws import budget_flops, inference_optimal

    if C is None and (gpu is None or hours is None):
        raise UserError("give --C, or --gpu with --hours (and --gpus, --mfu)")
    if unique_tokens is not None and unique_tokens < 1:
        raise UserError(f"--unique-tokens {unique_tokens:g} is less than one token")
    if C is not None and hours is not None:
        raise UserError("give the budget once: --C or --hours (with --gpu), not both")
    for name, needs in (("price", "--gpu"), ("mfu", "--gpu"), ("gpus", "--gpu")):
        if given(ctx, name) and gpu is None:
            raise UserError(f"--{name} applies with {needs}")
    if C is None:
        C = budget_flops(gpu, gpus, hours, mfu)
        if not math.isfinite(C):
            raise UserError(f"{gpus} GPUs for {hours:g} hours is more compute than a float holds")
    out: dict[str, Any] = {"C": C, "mfu": mfu}
    if gpu is not None:
        peak = budget_flops(gpu, 1, 1 / 3600, mfu)  # effective FLOP/s of one GPU
        out["gpu_hours"] = C / peak / 3600
        out["gpu"] = gpu
        if price is not None:
            out["cost"] = out["gpu_hours"] * price
    law = _law_of(law_name)
    click.echo(
        f"compute: {C:.3g} FLOPs"
        + (f" = {out['gpu_hours']:.4g} {gpu} GPU-hours at {100 * mfu:.0f}% MFU" if gpu else "")
    )
    if "cost" in out:
        click.echo(f"cost: ${out['cost']:,.0f} at ${price}/GPU-hour")
    if "U" in law.variables:
        if inference_tokens:
            raise UserError("--inference-tokens needs a Chinchilla law, not a data-constrained one")
        _constrained_plan(law, C, unique_tokens, law_name, out)
        write_json(json_path, out)
        return
    al = _optimal(law, C, law_name)
    out["optimal"] = al.to_dict()
    click.echo(
        f"compute-optimal ({law_name}): N = {al.N_opt:.3g}, D = {al.D_opt:.3g} "
        f"({al.tokens_per_param:.1f} tokens/param), loss {al.loss:.4f}"
    )
    if unique_tokens:
        out["optimal"]["U"] = unique_tokens
        out["optimal"]["epochs"] = epochs = al.D_opt / unique_tokens
        line = f"epochs: {epochs:.2f} of {unique_tokens:.3g} unique tokens"
        if epochs > 1:
            line += (f"; D > U, and {law_name} treats repeated tokens as fresh: plan with "
                     "--law muennighoff2023, which discounts them")  # fmt: skip
        click.echo(line)
    if inference_tokens:
        inf = inference_optimal(law, C, inference_tokens)
        out["inference_optimal"] = inf
        saved = 1 - inf["total_flops"] / inf["compute_optimal_total"]
        click.echo(
            f"inference-aware ({inference_tokens:.3g} tokens served): N = {inf['N']:.3g}, "
            f"D = {inf['D']:.3g} ({inf['D'] / inf['N']:.1f} tokens/param), same loss, "
            f"{100 * saved:.1f}% fewer lifetime FLOPs"
        )
    write_json(json_path, out)


def _constrained_plan(
    law: Any, C: float, U: float | None, law_name: str, out: dict[str, Any]
) -> None:
    """The data-constrained plan: the best N and D for C from U unique tokens, beside the plan
    with unlimited unique data under the same law."""
    from jaxscale.laws import constrained_optimal

    free = constrained_optimal(law, C, math.inf)
    if U is None:
        out["optimal"] = free.to_dict()
        click.echo(
            f"compute-optimal ({law_name}, unlimited unique data): N = {free.N_opt:.3g}, "
            f"D = {free.D_opt:.3g}, loss {free.loss:.4f} (give --unique-tokens for a corpus)"
        )
        return
    al = constrained_optimal(law, C, U)
    out["optimal"], out["unlimited_data"] = al.to_dict(), free.to_dict()
    click.echo(
        f"data-constrained optimum ({law_name}, {U:.3g} unique tokens): N = {al.N_opt:.3g}, "
        f"D = {al.D_opt:.3g} = {al.epochs:.2f} epochs ({al.tokens_per_param:.1f} tokens/param), "
        f"loss {al.loss:.4f}"
    )
    click.echo(
        f"with unlimited unique data: N = {free.N_opt:.3g}, D = {free.D_opt:.3g}, "
        f"loss {free.loss:.4f} ({al.loss - free.loss:+.4f} from repeating)"
    )


@click.command()
@click.option("--N", "N", type=POSITIVE, default=None, help="Parameters.")
@click.option("--D", "D", type=POSITIVE, default=None, help="Training tokens.")
@click.option("--U", "U", type=POSITIVE, default=None, help="Unique tokens (default D).")
@click.option("--models", is_flag=True, help="Compare well-known models.")
@LAW_OPTION
@JSON_OPTION
def predict(
    N: float | None,
    D: float | None,
    U: float | None,
    models: bool,
    law_name: str,
    json_path: Path | None,
) -> None:
    """Predicted loss at --N and --D (and --U), or (--models / no arguments) for famous models."""
    from jaxscale.laws import compare_models, predict_loss

    if (N is None) != (D is None):
        raise UserError("give both --N and --D (or neither, for the model table)")
    if models and N is not None:
        raise UserError("give --N and --D, or --models, not both")
    if U is not None and N is None:
        raise UserError("--U applies with --N and --D")
    for flag, value in (("--N", N), ("--D", D), ("--U", U)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value:g} is less than one parameter or token")
    law = _law_of(law_name)
    if N is not None:
        if U is not None and "U" not in law.variables:
            raise UserError(f"--U needs a data-constrained law (--law muennighoff2023), "
                            f"and {law_name} treats every token as unique")  # fmt: skip
        loss = float(predict_loss(law, N, D, U))
        shown = f", U={U:.3g}" if U is not None else ""
        click.echo(
            f"{law_name}: L(N={N:.3g}, D={D:.3g}{shown}) = {loss:.4f}  ({D / N:.1f} tokens/param)"
        )
        write_json(json_path, {"law": law_name, "N": N, "D": D, "U": U, "loss": loss})
        return
    rows = compare_models(law)
    click.echo(f"  {'model':<16} {'N':>9} {'D':>9} {'tok/param':>9} {'loss':>7}   ({law_name})")
    for r in rows:
        click.echo(
            f"  {r['model']:<16} {r['N']:>9.3g} {r['D']:>9.3g} "
            f"{r['tokens_per_param']:>9.1f} {r['loss']:>7.4f}"
        )
    write_json(json_path, {"law": law_name, "models": rows})
