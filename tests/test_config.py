"""Configuration: file, environment overrides, and validation that lists every problem."""

from pathlib import Path

import pytest

from ctiserver.config import ConfigError, load_settings


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.ami.port == 5038
    assert settings.fastagi.port == 4573
    assert settings.database.dsn == ""  # embedded PostgreSQL
    assert settings.redis.url == ""
    assert settings.data_path == Path("data")


def test_file_then_environment_override(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[ami]\nhost = "pbx.example"\nsecret = "from-file"\n'
        '[database]\ndsn = "postgresql://u@db/cti"\n'
        '[server]\ndata_dir = "/var/lib/ctiserver"\n',
        encoding="utf-8",
    )
    settings = load_settings(
        config, environ={"CTISERVER_AMI_SECRET": "from-env", "CTISERVER_FASTAGI_PORT": "14573"}
    )
    assert settings.ami.host == "pbx.example"
    assert settings.ami.secret == "from-env"
    assert settings.fastagi.port == 14573
    assert settings.database.dsn == "postgresql://u@db/cti"
    assert settings.data_path == Path("/var/lib/ctiserver")


def test_config_path_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[http]\nport = 9090\n", encoding="utf-8")
    settings = load_settings(environ={"CTISERVER_CONFIG": str(config)})
    assert settings.http.port == 9090


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[ami]\nport = "five"\nauth = "kerberos"\nsecrt = "typo"\n'
        "[http]\nport = 70000\n[nonsense]\nx = 1\n"
        '[redis]\nurl = "localhost:6379"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={"CTISERVER_AMI_ACTION_TIMEOUT": "-1"})
    problems = "\n".join(caught.value.problems)
    assert f"{config}: ami.port: expected int, got 'five'" in problems
    assert "unknown setting ami.secrt" in problems
    assert "unknown section [nonsense]" in problems
    assert "http.port: 70000 is not a TCP port" in problems
    assert "ami.auth: 'kerberos'" in problems
    assert "ami.action_timeout: must be positive" in problems
    assert "redis.url: 'localhost:6379' is not a redis:// URL" in problems
    assert len(caught.value.problems) == 7


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[ami\nport = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_settings(config, environ={})


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_utf8_values_survive(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[ami]\nsecret = "密码"\n', encoding="utf-8")
    assert load_settings(config, environ={}).ami.secret == "密码"


def test_a_boolean_setting_from_the_file_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[http]\nsecure_cookie = true\n", encoding="utf-8")
    assert load_settings(config, environ={}).http.secure_cookie is True
    unset = tmp_path / "unset.toml"
    unset.write_text("[http]\nport = 8080\n", encoding="utf-8")
    assert load_settings(unset, environ={}).http.secure_cookie is False
    for word, meaning in (("yes", True), ("1", True), ("FALSE", False), ("no", False)):
        environ = {"CTISERVER_HTTP_SECURE_COOKIE": word}
        assert load_settings(config, environ=environ).http.secure_cookie is meaning


def test_a_boolean_setting_refuses_other_values(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[http]\nsecure_cookie = "maybe"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={"CTISERVER_HTTP_SECURE_COOKIE": "sometimes"})
    # The environment wins over the file: its value is the one reported.
    assert caught.value.problems == [
        "$CTISERVER_HTTP_SECURE_COOKIE: expected true or false, got 'sometimes'"
    ]
    config.write_text("[http]\nsecure_cookie = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"http\.secure_cookie: expected true or false, got 1"):
        load_settings(config, environ={})
