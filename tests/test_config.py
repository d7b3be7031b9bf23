"""params.yaml → typed settings: defaults, overrides and errors that name the key."""

import pytest

from components.config import ConfigError, load_params
from tests.conftest import REPO_ROOT, write_params


def test_repo_params_load_with_the_documented_defaults():
    p = load_params(REPO_ROOT / "params.yaml")
    assert p.data.format == "criteo"
    assert p.uses_synthetic
    assert p.preprocess.split_ratios == (0.8, 0.1, 0.1)
    assert p.generate.rows == 100_000
    assert p.preprocess.numeric == "log2_bucket"
    assert p.raw_input() == ("criteo", REPO_ROOT.joinpath("data/raw/synthetic.txt").relative_to(REPO_ROOT))


def test_override_by_dotted_key():
    p = load_params(REPO_ROOT / "params.yaml", {"preprocess.min_count": 3, "generate.rows": 7})
    assert p.preprocess.min_count == 3
    assert p.generate.rows == 7


@pytest.mark.parametrize(
    ("section", "values", "needle"),
    [
        ({"preprocess": {"split_ratios": [0.5, 0.1, 0.1]}}, None, "preprocess.split_ratios"),
        ({"preprocess": {"min_cuont": 3}}, None, "preprocess.min_cuont"),
        ({"generate": {"rows": 0}}, None, "generate.rows"),
        ({"data": {"format": "parquet"}}, None, "data.format"),
    ],
)
def test_bad_params_name_the_key(tmp_path, section, values, needle):
    path = write_params(tmp_path, **section)
    with pytest.raises(ConfigError) as e:
        load_params(path)
    assert needle in str(e.value)
    assert str(path) in str(e.value)


def test_synthetic_input_must_match_its_format(tmp_path):
    path = write_params(tmp_path, data={"format": "avazu"})
    with pytest.raises(ConfigError, match="generate.format"):
        load_params(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
