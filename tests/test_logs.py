"""Log output: JSON lines (fields, extra=, exceptions, unescaped Chinese), text, settings, CLI."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ctiserver.cli import main
from ctiserver.config import ConfigError, load_settings
from ctiserver.logs import JsonFormatter, configure_logging


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_the_fields_and_chinese_as_itself(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    log = logging.getLogger("ctiserver.acd.controller")
    before = datetime.now(UTC)
    log.warning(
        "原始呼叫 %s 转给 %s 失败",
        "1795417488.13",
        "王小明",
        extra={"call_id": "1795417488.13", "agent_id": "1001", "queue": "客户服务"},
    )
    log.debug("below the level: not written")
    [line] = _lines(stream)
    assert "王小明" in line and "客户服务" in line and "\\u" not in line
    entry = json.loads(line)
    assert list(entry)[:4] == ["ts", "level", "logger", "message"]
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "ctiserver.acd.controller"
    assert entry["message"] == "原始呼叫 1795417488.13 转给 王小明 失败"
    assert (entry["call_id"], entry["agent_id"], entry["queue"]) == (
        "1795417488.13",
        "1001",
        "客户服务",
    )
    assert entry["ts"].endswith("Z")
    stamp = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00"))
    assert stamp.tzinfo is not None and stamp.utcoffset() is not None
    assert abs((stamp - before).total_seconds()) < 60


def test_an_exception_is_a_field_and_the_line_stays_one_line(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    try:
        raise ValueError("账单有误")
    except ValueError:
        logging.getLogger("ctiserver.test").exception("wrap-up not stored", extra={"n": 3})
    [line] = _lines(stream)
    entry = json.loads(line)
    assert entry["exception_type"] == "ValueError"
    assert "Traceback" in entry["exception"] and "ValueError: 账单有误" in entry["exception"]
    assert entry["n"] == 3  # JSON types kept
    assert entry["message"] == "wrap-up not stored"


def test_values_json_cannot_hold_are_text_and_the_four_fields_win(
    restore_root_logger: None,
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    recording = Path("/var/spool/录音.wav")
    logging.getLogger("x").info("path", extra={"file": recording, "level": "spoofed"})
    entry = json.loads(_lines(stream)[0])
    assert entry["file"] == "/var/spool/录音.wav"
    assert entry["level"] == "INFO"


def test_text_is_the_classic_line_and_reconfiguring_does_not_double_it(
    restore_root_logger: None,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", first)
    configure_logging("info", "text", second)
    logging.getLogger("ctiserver.app").info("坐席 %s 已登录", "王小明", extra={"agent_id": "1001"})
    assert first.getvalue() == ""
    [line] = _lines(second)
    assert line.endswith(" INFO ctiserver.app: 坐席 王小明 已登录")


def test_the_setting_and_its_variable(tmp_path: Path) -> None:
    config = tmp_path / "ctiserver.toml"
    config.write_text('[server]\nlog_format = "json"\n', encoding="utf-8")
    assert load_settings(config, environ={}).server.log_format == "json"
    assert load_settings(config, environ={"CTISERVER_SERVER_LOG_FORMAT": "text"}).server.log_format
    with pytest.raises(ConfigError) as error:
        load_settings(None, environ={"CTISERVER_SERVER_LOG_FORMAT": "xml"})
    assert "server.log_format" in str(error.value)


@pytest.mark.usefixtures("no_server_config", "restore_root_logger")
def test_the_command_line_flag_wins_over_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CTISERVER_SERVER_LOG_FORMAT", "text")
    assert main(["--log-format", "json", "config"]) == 0
    assert json.loads(capsys.readouterr().out)["server"]["log_format"] == "text"
    [handler] = [h for h in logging.getLogger().handlers if h.get_name() == "ctiserver"]
    assert isinstance(handler.formatter, JsonFormatter)
    assert main(["config"]) == 0
    [handler] = [h for h in logging.getLogger().handlers if h.get_name() == "ctiserver"]
    assert not isinstance(handler.formatter, JsonFormatter)
