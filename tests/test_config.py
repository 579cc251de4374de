"""Config loading: YAML numbers, overrides, and one-line errors for every kind of bad input."""

from pathlib import Path

import pytest

from jaxscale.config import ConfigError, config_from_dict, load_config
from jaxscale.counting import PRESETS, ModelShape
from jaxscale.results import read_records

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "name": "t",
    "models": [{"n_layer": 2, "d_model": 64, "n_head": 2}, "tiny"],
    "tokens": ["1.0e6", "2e5"],  # PyYAML reads these as strings
    "train": {"lr": "3e-3"},
}


def test_numbers_written_as_yaml_strings_are_coerced() -> None:
    cfg = config_from_dict(BASE)
    assert cfg.tokens == (1e6, 2e5)
    assert cfg.train.lr == 3e-3
    assert cfg.models == (ModelShape(2, 64, 2), PRESETS["tiny"])


def test_runs_cover_the_grid_smallest_first() -> None:
    runs = config_from_dict(BASE).runs()
    assert [(r.shape.d_model, r.tokens) for r in runs] == [
        (64, 200_000),
        (64, 1_000_000),
        (128, 200_000),
        (128, 1_000_000),
    ]
    assert len({r.name for r in runs}) == 4


def test_tokens_per_param_scales_with_non_embedding_n() -> None:
    cfg = config_from_dict({**BASE, "tokens": None, "tokens_per_param": [20]} | {"tokens": []})
    (small, tiny) = cfg.runs()
    assert small.tokens == 20 * 100_096 and tiny.tokens > small.tokens


def test_override_and_fingerprint(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: t\nmodels: [tiny]\ntokens: [1e5]\n")
    a = load_config(path)
    b = load_config(path, ["train.lr=1e-2"])
    assert b.train.lr == 1e-2 and a.fingerprint() != b.fingerprint()
    # adding runs to the ladder keeps the fingerprint: the old results still belong
    assert load_config(path, ["tokens=[1e5, 2e5]"]).fingerprint() == a.fingerprint()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trian": {}}, "unknown key 'trian'"),
        ({"train": {"lrr": 1}}, "unknown key 'train.lrr'"),
        ({"context": "long"}, "'context' must be a number"),
        ({"context": 0}, "'context' must be positive"),
        ({"train": {"batch_size": 2.5}}, "'train.batch_size' must be a whole number"),
        ({"models": [{"n_layer": 2, "d_model": 64, "n_head": 3}]}, "must divide d_model"),
        ({"models": [{"n_layer": -1, "d_model": 64, "n_head": 2}]}, "models[0].n_layer"),
        ({"models": ["huge"]}, "unknown preset 'huge'"),
        ({"models": [{"n_layer": 2, "d_model": 64}]}, "n_head"),
        ({"tokens_per_param": [20]}, "exactly one of 'tokens' or 'tokens_per_param'"),
        ({"train": {"schedule": "linear"}}, "'train.schedule' must be one of"),
        ({"tokenizer": "sentencepiece"}, "'tokenizer' must be one of"),
    ],
)
def test_bad_configs_raise_one_line(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({**BASE, **change})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_override_and_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config("configs/quick.yaml", ["train.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_shipped_configs_load() -> None:
    for name in ("quick", "macbook", "gpu"):
        assert load_config(f"configs/{name}.yaml").runs()


def test_the_quick_pairs_trial_trains_runs_of_the_quick_ladder() -> None:
    """configs/trials/quick-pairs.yaml measures training settings on four of the quick ladder's
    runs, so its runs must stay the ladder's when either config changes."""
    quick = load_config(REPO / "configs" / "quick.yaml")
    pairs = load_config(REPO / "configs" / "trials" / "quick-pairs.yaml")
    for key in ("corpus", "tokenizer", "context", "seed", "train", "eval"):
        assert getattr(pairs, key) == getattr(quick, key), key
    ladder = {(s.name, s.shape, s.tokens) for s in quick.runs()}
    trial = {(s.name, s.shape, s.tokens) for s in pairs.runs()}
    assert len(trial) == 4 and trial <= ladder


def test_the_committed_quick_report_belongs_to_the_quick_config() -> None:
    """reports/examples/quick is what the README's first command makes: every run of the config,
    under its fingerprint (`jaxscale report` and `--against` read it as a sweep directory)."""
    cfg = load_config(REPO / "configs" / "quick.yaml")
    records = read_records(REPO / "reports" / "examples" / "quick")
    assert {r["config_fingerprint"] for r in records} == {cfg.fingerprint()}
    assert sorted(r["run"] for r in records) == sorted(s.name for s in cfg.runs())


def test_lists_of_lrs_and_seeds_make_one_run_each_and_keep_the_fingerprint() -> None:
    cfg = config_from_dict({**BASE, "train": {"lr": [1e-3, 3e-3]}, "seeds": [0, 1]})
    runs = cfg.runs()
    assert len(runs) == 2 * 2 * 2 * 2
    assert runs[0].name.endswith("_lr0.001_s0") and {r.lr for r in runs} == {1e-3, 3e-3}
    more = config_from_dict({**BASE, "train": {"lr": [1e-3, 3e-3, 1e-2]}, "seeds": [0, 1, 2]})
    assert more.fingerprint() == cfg.fingerprint()  # a sweep directory may grow by more of them


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": {"lr": [1e-3, 1e-3]}}, "must not repeat"),
        ({"train": {"lr": [1e-3, -1.0]}}, "train.lr[1]"),
        ({"pack": 0}, "'pack' must be positive"),
        ({"early_stop": 1.5}, "'early_stop'"),
        ({"train": {"schedule": "wsd", "decay": 0.01}}, "'train.decay'"),
    ],
)
def test_pack_and_schedule_mistakes_are_named(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict({**BASE, **change})
