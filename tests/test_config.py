"""Config loading: YAML numbers, overrides, and one-line errors for every kind of bad input."""

import pytest

from jaxscale.config import ConfigError, config_from_dict, load_config
from jaxscale.counting import PRESETS, ModelShape

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
