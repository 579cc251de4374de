# ruff: noqa: E501  (a table of cases reads best one case a line)
"""Every law-side command refuses every bad input with one line and exit status 2, and leaves
what was there before untouched: a table of bad inputs, each with the message it gets.

The cases run in this process on files made once; none of them reaches a fit, so the table is
cheap. ``{w}`` in a case is the folder of those files; every command that takes ``--json`` is
also given one pointing at a file that already exists, which must survive unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxscale.cli import main

GOOD_CSV = "N,D,loss\n" + "\n".join(
    f"{n:g},{d:g},{2 + 400 / n**0.3 + 900 / d**0.3:.6f}"
    for n in (1e6, 3e6, 1e7, 3e7)
    for d in (1e8, 3e8, 1e9)
)
RECORD = {"run": "r", "N": 1e6, "N_total": 2e6, "D": 1e8, "C": 6e14, "C_counted": 7e14,
          "loss": 3.0, "bpb": 4.3, "steps": 10, "status": "ok", "tokens_per_s": 1.0,
          "wall_s": 1.0, "config": {"name": "x", "train": {"lr": 1e-3}}}  # fmt: skip


def _csv(text: str) -> str:
    return text.strip() + "\n"


FILES: dict[str, str | bytes] = {
    "good.csv": GOOD_CSV + "\n",
    "empty.csv": "",
    "header_only.csv": "N,D,loss\n",
    "binary.csv": bytes(range(256)) * 4,
    "semicolons.csv": _csv("N;D;loss\n1e6;1e8;3.1\n1e7;1e9;2.9"),
    "ragged.csv": _csv("N,D,loss\n1e6,1e8,3.1\n1e7,1e9"),
    "nameless.csv": _csv("N,,loss\n1e6,1e8,3.1"),
    "twice.csv": _csv("N,N,loss\n1e6,1e8,3.1"),
    "text_N.csv": _csv("N,D,loss\n1e6,1e8,3.1\nlarge,1e9,2.9"),
    "empty_N.csv": _csv("N,D,loss\n1e6,1e8,3.1\n,1e9,2.9"),
    "nan_N.csv": _csv("N,D,loss\n1e6,1e8,3.1\nnan,1e9,2.9"),
    "inf_D.csv": _csv("N,D,loss\n1e6,inf,3.1\n1e7,1e9,2.9"),
    "zero_N.csv": _csv("N,D,loss\n0,1e8,3.1\n1e7,1e9,2.9"),
    "negative_D.csv": _csv("N,D,loss\n1e6,-1e8,3.1\n1e7,1e9,2.9"),
    "negative_C.csv": _csv("N,C,loss\n1e6,-6e14,3.1\n1e7,6e16,2.9"),
    "zero_loss.csv": _csv("N,D,loss\n1e6,1e8,0\n1e7,1e9,2.9"),
    "nan_losses.csv": _csv("N,D,loss\n1e6,1e8,nan\n1e7,1e9,"),
    "no_sizes.csv": _csv("width,D,loss\n64,1e8,3.1\n128,1e9,2.9"),
    "no_tokens.csv": _csv("N,steps,loss\n1e6,100,3.1\n1e7,1000,2.9"),
    "few.csv": _csv("N,D,loss\n1e6,1e8,3.1\n1e7,1e8,2.9\n1e6,1e9,2.8\n1e7,1e9,2.5"),
    "one_size.csv": "N,D,loss\n" + "".join(f"1e6,{d:g},{3 - d / 1e10:.4f}\n" for d in (1e8, 2e8, 4e8, 8e8, 1.6e9, 3.2e9, 6.4e9)),
    "one_count.csv": "N,D,loss\n" + "".join(f"{n:g},1e9,{3 - n / 1e9:.4f}\n" for n in (1e6, 2e6, 4e6, 8e6, 1.6e7, 3.2e7, 6.4e7)),
    "fresh_U.csv": "N,D,U,loss\n" + "".join(f"{n:g},{d:g},1e12,{2 + 400 / n**0.3 + 900 / d**0.3:.6f}\n" for n in (1e6, 1e7, 1e8) for d in (1e8, 1e9, 1e10)),
    "bad.jsonl": '{"N": 1e6, "D": 1e8, "loss": 3.1}\n{"N": 1e7, "D": \n',
    "list.jsonl": '{"N": 1e6, "D": 1e8, "loss": 3.1}\n[1e7, 1e9, 2.9]\n',
    "acc_high.csv": _csv("T,accuracy\n1,0.2\n2,0.4\n4,1.3"),
    "acc_negative.csv": _csv("T,accuracy\n1,-0.2\n2,0.4\n4,0.6"),
    "T_zero.csv": _csv("T,accuracy\n0,0.2\n2,0.4\n4,0.6"),
    "T_text.csv": _csv("T,accuracy\n1,0.2\ntwo,0.4\n4,0.6"),
    "no_accuracy.csv": _csv("T,score_pct\n1,20\n2,40"),
    "acc_zero.csv": _csv("T,accuracy\n1,0\n2,0\n4,0"),
    "broken_law.json": '{"form": "Chinchilla", "params": {',
    "unknown_form.json": json.dumps({"form": "Gompertz", "params": {"a": 1.0}}),
    "missing_params.json": json.dumps({"form": "Chinchilla", "params": {"E": 1.7, "A": 400}}),
    "text_param.json": json.dumps({"form": "Chinchilla", "params": {"E": 1.7, "A": "big", "B": 410, "alpha": 0.34, "beta": 0.28}}),
    "nan_param.json": '{"form": "Chinchilla", "params": {"E": NaN, "A": 406, "B": 410, "alpha": 0.34, "beta": 0.28}}',
    "negative_alpha.json": json.dumps({"form": "Chinchilla", "params": {"E": 1.7, "A": 406, "B": 410, "alpha": -0.34, "beta": 0.28}}),
    "power_law.json": json.dumps({"form": "OffsetPower", "params": {"E": 1.8, "A": 450, "alpha": 0.3}}),
    "list_law.json": "[1, 2, 3]",
    "prev.json": '{"kept": true}\n',
    "no_results/README": "not a sweep\n",
    "empty_sweep/results.jsonl": "",
    "diverged/results.jsonl": json.dumps({**RECORD, "status": "diverged", "loss": None}) + "\n",
    "broken_sweep/results.jsonl": json.dumps(RECORD) + "\n{not json\n" + json.dumps(RECORD) + "\n",
    "broken_sweep/laws.json": '{"laws": {}}\n',
    "foreign_sweep/results.jsonl": "".join(json.dumps({"N": n, "D": 1e9, "loss": 3.0, "status": "ok"}) + "\n" for n in (1e6, 1e7)),
    "foreign_sweep/report.md": "# an earlier report\n",
    "run_broken/run.json": '{"run": "r", "tokens": 1000,',
    "run_broken/metrics.jsonl": "",
    "run_short/run.json": json.dumps({"run": "r", "tokens": 10000, "steps": 100, "warmup_steps": 5}),
    "run_short/metrics.jsonl": "".join(json.dumps({"step": s, "tokens": 100 * s, "loss": 5 - s / 50}) + "\n" for s in (1, 10, 20)),
    "run_bad_line/run.json": json.dumps({"run": "r", "tokens": 10000, "steps": 100, "warmup_steps": 5}),
    "run_bad_line/metrics.jsonl": '{"step": 1, "tokens": 100, "loss": 5}\n{"step": 2, "tok\n{"step": 3}\n',
    "not_a_run/notes.txt": "nothing here\n",
    "seed0/results.jsonl": "".join(json.dumps({**RECORD, "run": f"r{d:g}", "D": d, "budget": 6e14, "seed": 0, "corpus": "stdlib", "corpus_fingerprint": "6fa3"}) + "\n" for d in (1e8, 2e8)),
    "seed3/results.jsonl": "".join(json.dumps({**RECORD, "run": f"r{d:g}", "D": d, "budget": 6e14, "seed": 3, "config": {"name": "x", "seed": 3, "train": {"lr": 3e-3}}}) + "\n" for d in (1e8, 2e8)),
    "seed2/results.jsonl": "".join(json.dumps({**RECORD, "run": f"r{d:g}", "D": d, "budget": 6e14, "seed": 2, "corpus": "text:my.txt", "corpus_fingerprint": "9b1c"}) + "\n" for d in (1e8, 2e8)),
    "seed1/results.jsonl": "".join(json.dumps({**RECORD, "run": f"r{d:g}", "D": d, "budget": 6e14, "seed": 1}) + "\n" for d in (1e8, 4e8)),
}  # fmt: skip

# (id, argv, a fragment of the one-line message). Grouped by command; the ids name the mistake.
CASES: list[tuple[str, list[str], str]] = [
    # fit: files that are not tables
    ("fit-missing-file", ["fit", "{w}/nope.csv"], "does not exist"),
    ("fit-empty-file", ["fit", "{w}/empty.csv"], "is empty"),
    ("fit-header-only", ["fit", "{w}/header_only.csv"], "a header but no data rows"),
    ("fit-binary", ["fit", "{w}/binary.csv"], "not a text table (binary data)"),
    ("fit-other-delimiter", ["fit", "{w}/semicolons.csv"], "looks ';'-separated"),
    ("fit-ragged-row", ["fit", "{w}/ragged.csv"], "line 3: 2 values where the header has 3"),
    ("fit-nameless-column", ["fit", "{w}/nameless.csv"], "every column needs a name"),
    ("fit-duplicate-column", ["fit", "{w}/twice.csv"], "every column needs a name of its own"),
    ("fit-jsonl-broken-line", ["fit", "{w}/bad.jsonl"], "line 2: not JSON"),
    ("fit-jsonl-not-object", ["fit", "{w}/list.jsonl"], "line 2: a row must be a JSON object"),
    # fit: values
    ("fit-text-in-N", ["fit", "{w}/text_N.csv"], "line 3: N = 'large' is not a number"),
    ("fit-empty-N", ["fit", "{w}/empty_N.csv"], "N ('N') must be a positive number; not so at line 3 (nan)"),
    ("fit-nan-N", ["fit", "{w}/nan_N.csv"], "N ('N') must be a positive number; not so at line 3"),
    ("fit-infinite-D", ["fit", "{w}/inf_D.csv"], "D ('D') must be a positive number; not so at line 2 (inf)"),
    ("fit-zero-N", ["fit", "{w}/zero_N.csv"], "not so at line 2 (0)"),
    ("fit-negative-D", ["fit", "{w}/negative_D.csv"], "not so at line 2 (-1e+08)"),
    ("fit-negative-C", ["fit", "{w}/negative_C.csv"], "C ('C') must be a positive number"),
    ("fit-zero-loss", ["fit", "{w}/zero_loss.csv"], "the loss ('loss') must be positive"),
    ("fit-no-finite-loss", ["fit", "{w}/nan_losses.csv"], "no row has a finite loss"),
    # fit: columns
    ("fit-named-column-missing", ["fit", "{w}/good.csv", "--loss-col", "val_loss"], "has no column 'val_loss'"),
    ("fit-no-size-column", ["fit", "{w}/no_sizes.csv"], "no column of parameters (name it with --n-col)"),
    ("fit-no-token-column", ["fit", "{w}/no_tokens.csv"], "no column of training tokens"),
    ("fit-u-column-missing", ["fit", "{w}/good.csv", "--u-col", "U"], "has no column 'U'"),
    # fit: filters and options
    ("fit-where-syntax", ["fit", "{w}/good.csv", "--where", "lr 3e-3"], "expected COLUMN OP VALUE"),
    ("fit-where-unknown-column", ["fit", "{w}/good.csv", "--where", "lr==3e-3"], "has no column 'lr'"),
    ("fit-where-keeps-nothing", ["fit", "{w}/good.csv", "--where", "N>1e12"], "keeps none of the 12 rows"),
    ("fit-where-order-on-text", ["fit", "{w}/good.csv", "--where", "N<big"], "compares numbers"),
    ("fit-holdout-leaves-too-few", ["fit", "{w}/good.csv", "--holdout", "8"], "4 points are too few"),
    ("fit-holdout-with-approach-2", ["fit", "{w}/good.csv", "--approach", "2", "--holdout", "2"], "--holdout applies to approach 3"),
    ("fit-law-with-approach-1", ["fit", "{w}/good.csv", "--approach", "1", "--law", "kaplan"], "--law applies to approach 3"),
    ("fit-bootstrap-negative", ["fit", "{w}/good.csv", "--bootstrap", "-5"], "--bootstrap"),
    ("fit-bootstrap-huge", ["fit", "{w}/good.csv", "--bootstrap", "1000000000"], "--bootstrap"),
    ("fit-unknown-form", ["fit", "{w}/good.csv", "--law", "gompertz"], "--law"),
    ("fit-json-under-a-file", ["fit", "{w}/good.csv", "--json", "{w}/prev.json/out.json"], "cannot write"),
    # fit: too little data for the form
    ("fit-too-few-points", ["fit", "{w}/few.csv"], "4 points are too few"),
    ("fit-one-size", ["fit", "{w}/one_size.csv"], "1 distinct N (1e+06) among 7 rows; the chinchilla form needs 2"),
    ("fit-one-token-count", ["fit", "{w}/one_count.csv", "--law", "kaplan"], "1 distinct D"),
    ("fit-power-too-few-sizes", ["fit", "{w}/few.csv", "--law", "power"], "2 distinct N at the largest D"),
    ("fit-approach-2-no-budgets", ["fit", "{w}/good.csv", "--approach", "2"], "at least 2 budgets"),
    ("fit-constrained-without-U", ["fit", "{w}/good.csv", "--law", "data-constrained"], "no column of unique tokens"),
    ("fit-constrained-no-repeats", ["fit", "{w}/fresh_U.csv", "--law", "data-constrained"], "no point repeats its data"),
    # fit: sweep directories
    ("fit-dir-without-results", ["fit", "{w}/no_results"], "not a sweep directory"),
    ("fit-empty-results", ["fit", "{w}/empty_sweep"], "has no finished run"),
    ("fit-all-diverged", ["fit", "{w}/diverged"], "none has status ok"),
    ("fit-results-line-broken", ["fit", "{w}/broken_sweep"], "line 2: not JSON"),
    # isoflop
    ("isoflop-negative-budget", ["isoflop", "--C", "-5"], "-5.0 is not in the range x>0"),
    ("isoflop-zero-budget", ["isoflop", "--C", "0"], "is not in the range x>0"),
    ("isoflop-nan-budget", ["isoflop", "--C", "nan"], "'nan' is not a finite number"),
    ("isoflop-infinite-budget", ["isoflop", "--C", "inf"], "'inf' is not a finite number"),
    ("isoflop-overflowing-budget", ["isoflop", "--C", "1e400"], "'1e400' is not a finite number"),
    ("isoflop-text-budget", ["isoflop", "--C", "lots"], "'lots' is not a valid float"),
    ("isoflop-budget-below-a-parameter", ["isoflop", "--C", "1e-3"], "less than one of each"),
    ("isoflop-unknown-law", ["isoflop", "--C", "1e18", "--law", "gpt5"], "unknown law 'gpt5'"),
    ("isoflop-law-not-json", ["isoflop", "--C", "1e18", "--law", "{w}/broken_law.json"], "cannot read law file"),
    ("isoflop-law-unknown-form", ["isoflop", "--C", "1e18", "--law", "{w}/unknown_form.json"], "unknown law form 'Gompertz'"),
    ("isoflop-law-missing-params", ["isoflop", "--C", "1e18", "--law", "{w}/missing_params.json"], "needs params"),
    ("isoflop-law-text-param", ["isoflop", "--C", "1e18", "--law", "{w}/text_param.json"], "parameter A must be a finite number"),
    ("isoflop-law-nan-param", ["isoflop", "--C", "1e18", "--law", "{w}/nan_param.json"], "parameter E must be a finite number"),
    ("isoflop-law-negative-alpha", ["isoflop", "--C", "1e18", "--law", "{w}/negative_alpha.json"], "needs A, B, alpha, beta > 0"),
    ("isoflop-law-of-one-variable", ["isoflop", "--C", "1e18", "--law", "{w}/power_law.json"], "needs a law of N and D"),
    ("isoflop-law-not-an-object", ["isoflop", "--C", "1e18", "--law", "{w}/list_law.json"], "a law is a JSON object"),
    ("isoflop-law-a-directory", ["isoflop", "--C", "1e18", "--law", "{w}/broken_sweep"], "is a directory: give its laws file"),
    ("isoflop-kaplan-law", ["isoflop", "--C", "1e18", "--law", "kaplan2020"], "needs a Chinchilla law, not Kaplan"),
    ("isoflop-data-constrained-law", ["isoflop", "--C", "1e18", "--law", "muennighoff2023"], "plan with it by unique tokens"),
    ("isoflop-config-without-run", ["isoflop", "--C", "1e18", "--config", "{w}/good.csv"], "apply with --run"),
    # plan
    ("plan-no-budget", ["plan"], "give --C, or --gpu with --hours"),
    ("plan-gpu-without-hours", ["plan", "--gpu", "H100"], "give --C, or --gpu with --hours"),
    ("plan-unknown-gpu", ["plan", "--gpu", "TPUv9", "--hours", "1"], "unknown GPU 'TPUv9'"),
    ("plan-zero-hours", ["plan", "--gpu", "H100", "--hours", "0"], "--hours"),
    ("plan-nan-hours", ["plan", "--gpu", "H100", "--hours", "nan"], "'nan' is not a finite number"),
    ("plan-budget-twice", ["plan", "--C", "1e21", "--gpu", "H100", "--hours", "10"], "give the budget once"),
    ("plan-negative-price", ["plan", "--gpu", "H100", "--hours", "1", "--price", "-2"], "--price"),
    ("plan-price-without-gpu", ["plan", "--C", "1e21", "--price", "2"], "--price applies with --gpu"),
    ("plan-mfu-zero", ["plan", "--gpu", "H100", "--hours", "1", "--mfu", "0"], "--mfu"),
    ("plan-mfu-above-one", ["plan", "--gpu", "H100", "--hours", "1", "--mfu", "1.5"], "--mfu"),
    ("plan-mfu-nan", ["plan", "--gpu", "H100", "--hours", "1", "--mfu", "nan"], "'nan' is not a finite number"),
    ("plan-no-gpus", ["plan", "--gpu", "H100", "--hours", "1", "--gpus", "0"], "--gpus"),
    ("plan-overflowing-budget", ["plan", "--gpu", "H100", "--hours", "1e300", "--gpus", "1000000000"], "more compute than a float holds"),
    ("plan-negative-inference", ["plan", "--C", "1e21", "--inference-tokens", "-1"], "--inference-tokens"),
    ("plan-zero-unique-tokens", ["plan", "--C", "1e21", "--unique-tokens", "0"], "--unique-tokens"),
    ("plan-nan-unique-tokens", ["plan", "--C", "1e21", "--unique-tokens", "nan"], "not a finite number"),
    ("plan-inference-with-constrained", ["plan", "--C", "1e21", "--inference-tokens", "1e12", "--law", "muennighoff2023"], "--inference-tokens needs a Chinchilla law"),
    # predict
    ("predict-N-without-D", ["predict", "--N", "1e9"], "give both --N and --D"),
    ("predict-negative-N", ["predict", "--N", "-1", "--D", "1e9"], "--N"),
    ("predict-zero-D", ["predict", "--N", "1e9", "--D", "0"], "--D"),
    ("predict-infinite-N", ["predict", "--N", "inf", "--D", "1e9"], "'inf' is not a finite number"),
    ("predict-negative-U", ["predict", "--N", "1e9", "--D", "1e10", "--U", "-5", "--law", "muennighoff2023"], "--U"),
    ("predict-U-alone", ["predict", "--U", "1e9", "--law", "muennighoff2023"], "--U applies with --N and --D"),
    ("predict-U-with-chinchilla", ["predict", "--N", "1e9", "--D", "1e10", "--U", "1e9"], "--U needs a data-constrained law"),
    ("predict-models-and-N", ["predict", "--models", "--N", "1e9", "--D", "1e10"], "not both"),
    ("predict-unknown-law", ["predict", "--law", "gpt5"], "unknown law 'gpt5'"),
    ("predict-below-one-parameter", ["predict", "--N", "1e-300", "--D", "1e9"], "--N 1e-300 is less than one parameter"),
    ("plan-below-one-unique-token", ["plan", "--C", "1e21", "--unique-tokens", "0.5"], "less than one token"),
    # ttc
    ("ttc-accuracy-above-one", ["ttc", "{w}/acc_high.csv"], "accuracy ('accuracy') must be within [0, 1]; not so at line 4 (1.3)"),
    ("ttc-negative-accuracy", ["ttc", "{w}/acc_negative.csv"], "must be within [0, 1]"),
    ("ttc-zero-T", ["ttc", "{w}/T_zero.csv"], "T ('T') must be a positive number"),
    ("ttc-text-T", ["ttc", "{w}/T_text.csv"], "T = 'two' is not a number"),
    ("ttc-no-accuracy-column", ["ttc", "{w}/no_accuracy.csv"], "no column of accuracy"),
    ("ttc-all-accuracies-zero", ["ttc", "{w}/acc_zero.csv"], "no row has an accuracy above 0"),
    ("ttc-a-directory", ["ttc", "{w}/no_results"], "is a directory"),
    ("ttc-missing-file", ["ttc", "{w}/nope.csv"], "does not exist"),
    # extrapolate
    ("extrapolate-not-a-run", ["extrapolate", "{w}/not_a_run"], "is not a run directory"),
    ("extrapolate-missing-dir", ["extrapolate", "{w}/nope"], "does not exist"),
    ("extrapolate-fraction-zero", ["extrapolate", "{w}/run_short", "--fraction", "0"], "--fraction must be in (0, 1)"),
    ("extrapolate-fraction-above-one", ["extrapolate", "{w}/run_short", "--fraction", "1.5"], "--fraction must be in (0, 1)"),
    ("extrapolate-fraction-nan", ["extrapolate", "{w}/run_short", "--fraction", "nan"], "--fraction must be in (0, 1)"),
    ("extrapolate-run-json-broken", ["extrapolate", "{w}/run_broken"], "is not a jaxscale run's"),
    ("extrapolate-metrics-line-broken", ["extrapolate", "{w}/run_bad_line"], "line 2: not JSON"),
    ("extrapolate-too-few-points", ["extrapolate", "{w}/run_short"], "logged points after warmup"),
    # report
    ("report-without-results", ["report", "{w}/no_results"], "has no finished run"),
    ("report-empty-results", ["report", "{w}/empty_sweep"], "has no finished run"),
    ("report-all-diverged", ["report", "{w}/diverged"], "has no finished run"),
    ("report-results-line-broken", ["report", "{w}/broken_sweep"], "line 2: not JSON"),
    ("report-foreign-records", ["report", "{w}/foreign_sweep"], "record 1 (unnamed) lacks run, N_total"),
    ("report-against-broken", ["report", "{w}/foreign_sweep", "--against", "{w}/broken_sweep"], "lacks run"),
    ("report-missing-dir", ["report", "{w}/nope"], "does not exist"),
    # seeds
    ("seeds-none", ["seeds"], "Missing argument 'SWEEPS...'"),
    ("seeds-one-sweep", ["seeds", "{w}/seed0"], "give two or more seeds' sweeps"),
    ("seeds-same-seed-twice", ["seeds", "{w}/seed0", "{w}/seed0/results.jsonl"], "both trained seed 0: give each seed once"),
    ("seeds-other-ladders", ["seeds", "{w}/seed0", "{w}/seed1"], "finished different runs (1 only in the second, e.g. r2e+08; 1 only in the first, e.g. r4e+08)"),
    ("seeds-other-corpus", ["seeds", "{w}/seed0", "{w}/seed2"], "trained on corpus text:my.txt (fingerprint 9b1c), "),
    ("seeds-other-settings", ["seeds", "{w}/seed0", "{w}/seed3"], "seed0's in more than the seed: train.lr (0.003 against 0.001)"),
    ("seeds-missing-dir", ["seeds", "{w}/seed0", "{w}/nope"], "does not exist"),
    ("seeds-empty-results", ["seeds", "{w}/seed0", "{w}/empty_sweep"], "no finished runs"),
    ("seeds-foreign-records", ["seeds", "{w}/foreign_sweep", "{w}/seed0"], "record 1 (unnamed) lacks run, budget"),
    ("seeds-bootstrap-negative", ["seeds", "{w}/seed0", "{w}/seed1", "--bootstrap", "-1"], "--bootstrap"),
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = tmp_path_factory.mktemp("bad-inputs")
    for name, content in FILES.items():
        path = w / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return w


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_table_is_large_and_covers_every_command() -> None:
    commands = {argv[0] for _, argv, _ in CASES}
    assert commands == {
        "fit",
        "isoflop",
        "plan",
        "predict",
        "ttc",
        "extrapolate",
        "report",
        "seeds",
    }
    assert len(CASES) >= 40 and len({case for case, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_and_exit_2(
    world: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(w=world) for a in argv]
    if argv[0] in ("fit", "isoflop", "plan", "predict", "ttc", "seeds") and "--json" not in argv:
        argv += ["--json", str(world / "prev.json")]
    before = _snapshot(world)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("jaxscale: error:") and err.count("\n") == 1, err
    assert message in err, err
    assert _snapshot(world) == before  # nothing written, nothing overwritten
