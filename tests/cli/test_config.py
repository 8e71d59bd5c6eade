"""Settings precedence: flags over THROTTLEPOOL_* over the config file over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from throttlepool._config import DEFAULTS, env_name, find_config, load_settings
from throttlepool.errors import ConfigError


def test_defaults(tmp_path: Path) -> None:
    s = load_settings({}, env={}, cwd=tmp_path)
    assert s["batch_size"] == DEFAULTS["batch_size"] == 8
    assert s["provider"] == "openai" and s["rpm"] is None and s.file is None


def test_flags_over_env_over_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.throttlepool]\nbatch-size = 2\nrpm = 100\n'
        'model = "from-file"\nskip_bad_records = true\n', encoding="utf-8")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    env = {"THROTTLEPOOL_RPM": "200", "THROTTLEPOOL_MODEL": "from-env"}
    s = load_settings({"model": "from-flag", "tpm": None}, env=env, cwd=sub)
    assert s.file == tmp_path / "pyproject.toml"
    assert (s["batch_size"], s["rpm"], s["model"]) == (2, 200.0, "from-flag")
    assert s["skip_bad_records"] is True
    assert "config file" in s.sources["batch_size"]
    assert s.sources["rpm"] == "environment variable THROTTLEPOOL_RPM"
    assert s.sources["model"] == "command line"
    assert any("batch_size = 2" in line for line in s.describe())


def test_throttlepool_toml_wins_over_pyproject_in_same_dir(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.throttlepool]\nrpm = 1\n")
    (tmp_path / "throttlepool.toml").write_text("rpm = 2\n")
    assert load_settings({}, env={}, cwd=tmp_path)["rpm"] == 2.0


def test_pyproject_without_table_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    found = find_config(tmp_path)
    assert found is None or found[0] != tmp_path / "pyproject.toml"


def test_explicit_config_file_and_env_pointer(tmp_path: Path) -> None:
    cfg = tmp_path / "my.toml"
    cfg.write_text("batch_size = 9\n")
    assert load_settings({}, env={}, cwd=tmp_path, config=cfg)["batch_size"] == 9
    env = {"THROTTLEPOOL_CONFIG": str(cfg)}
    assert load_settings({}, env=env, cwd=tmp_path)["batch_size"] == 9


@pytest.mark.parametrize(("env", "match"), [
    ({"THROTTLEPOOL_BATCH_SIZE": "0"}, "THROTTLEPOOL_BATCH_SIZE: expected a positive integer"),
    ({"THROTTLEPOOL_RPM": "fast"}, "THROTTLEPOOL_RPM: expected a number"),
    ({"THROTTLEPOOL_SKIP_BAD_RECORDS": "maybe"}, "expected true or false"),
])
def test_bad_env_values_name_the_variable(tmp_path: Path, env: dict[str, str],
                                          match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings({}, env=env, cwd=tmp_path)


def test_bad_file_values_name_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "throttlepool.toml").write_text('batch_size = "many"\n')
    with pytest.raises(ConfigError, match=r"throttlepool\.toml, setting 'batch_size'"):
        load_settings({}, env={}, cwd=tmp_path)
    (tmp_path / "throttlepool.toml").write_text("batchsize = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'batchsize'"):
        load_settings({}, env={}, cwd=tmp_path)
    (tmp_path / "throttlepool.toml").write_text("rpm = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, env={}, cwd=tmp_path)


def test_bad_flag_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="option --batch-size"):
        load_settings({"batch_size": 0}, env={}, cwd=tmp_path)


def test_env_bools_and_names() -> None:
    assert env_name("batch_size") == "THROTTLEPOOL_BATCH_SIZE"
    s = load_settings({}, env={"THROTTLEPOOL_PROGRESS": "off", "THROTTLEPOOL_DB": ""},
                      cwd=Path("/"))
    assert s["progress"] is False and s["db"] == ""
