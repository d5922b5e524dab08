"""Configuration: one TOML file, overridden by CTISERVER_<SECTION>_<KEY> environment variables.

Every setting has a default, so ctiserver runs with no file at all (embedded
PostgreSQL, Asterisk on localhost). Validation collects every problem and
reports them together, each naming the file or variable it came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Final, get_type_hints

from ctiserver.event_loop import EVENT_LOOPS

ENV_PREFIX = "CTISERVER_"
CONFIG_ENV = "CTISERVER_CONFIG"
DEFAULT_FILE = "ctiserver.toml"


class ConfigError(ValueError):
    """Every problem found in the configuration, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class AmiSettings:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "cti"
    secret: str = "cti"
    # MD5 challenge login keeps the secret off the wire; plain is for peers without it.
    auth: str = "md5"
    connect_timeout: float = 5.0
    action_timeout: float = 10.0
    ping_interval: float = 20.0


@dataclass(frozen=True)
class FastAgiSettings:
    host: str = "127.0.0.1"
    port: int = 4573
    command_timeout: float = 60.0


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Bearer token Prometheus sends to read /metrics (ctiserver/http/prometheus.py);
    # empty: only a signed-in supervisor or admin can read it.
    metrics_token: str = ""
    # Behind a TLS proxy we see plain http: this marks the session cookie Secure anyway, so
    # a browser never sends it over plain http. Off by default: over plain http a browser
    # would drop a Secure cookie (except on localhost) and no one could sign in.
    secure_cookie: bool = False


@dataclass(frozen=True)
class DatabaseSettings:
    # Empty: run an embedded PostgreSQL in <data_dir>/pgdata.
    dsn: str = ""
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class RedisSettings:
    # Empty: single node, everything in process.
    url: str = ""


@dataclass(frozen=True)
class AcdSettings:
    # Agents, skills, queues and steps (TOML, see acd.example.toml).
    # Empty: the configuration stored in the database (`ctiserver acd import`).
    config: str = ""


@dataclass(frozen=True)
class IvrSettings:
    # The folder of flow files (*.yaml, see flows/ and ctiserver/ivr/flow.py).
    flows: str = "flows"
    # The flow for calls no `flow=` argument or dialled number picks.
    default: str = ""
    # How often the folder is checked for edited flows (0: never, load once).
    reload_s: float = 1.0


@dataclass(frozen=True)
class AuthSettings:
    # A browser session ends after this long without a request (sliding expiry).
    session_idle_s: float = 12 * 3600.0
    # Failed sign-ins allowed per login per minute before 429; a remote
    # address gets 5 times as many, since a centre's desks often share one NAT address.
    login_attempts_per_minute: int = 5


@dataclass(frozen=True)
class WallboardSettings:
    # Per-queue thresholds (TOML, see wallboard.example.toml and
    # ctiserver/wallboard/thresholds.py); no such file: the built-in defaults.
    thresholds: str = "wallboard.toml"


@dataclass(frozen=True)
class MetricsSettings:
    # How often the server rebuilds the summary rows of recent days whose figures
    # can still change (`ctiserver metrics rebuild --stale` in a child process);
    # 0: never (run that command from cron instead).
    summary_every_s: float = 3600.0


@dataclass(frozen=True)
class ServerSettings:
    data_dir: str = "data"
    log_level: str = "INFO"
    # "text" for people, "json" for a log collector: one object a line (ctiserver/logs.py).
    log_format: str = "text"
    # "uvloop" (its heap stays flat under load; ctiserver/event_loop.py) or "asyncio".
    event_loop: str = "uvloop"


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    ami: AmiSettings = field(default_factory=AmiSettings)
    fastagi: FastAgiSettings = field(default_factory=FastAgiSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    acd: AcdSettings = field(default_factory=AcdSettings)
    ivr: IvrSettings = field(default_factory=IvrSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    wallboard: WallboardSettings = field(default_factory=WallboardSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)


_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
_AMI_AUTH = {"md5", "plain"}


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the file (explicit path, $CTISERVER_CONFIG, or ./ctiserver.toml if present),
    apply environment overrides, validate, and return the settings."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    raw: dict[str, Any] = {}
    source = path or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    if source is None and Path(DEFAULT_FILE).is_file():
        source = Path(DEFAULT_FILE)
    if source is not None:
        try:
            raw = tomllib.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.append(f"{source}: no such file")
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{source}: {exc}")
    origin = str(source) if source else "defaults"

    sections: dict[str, Any] = {}
    hints = get_type_hints(Settings)
    for section_field in fields(Settings):
        section_type = hints[section_field.name]
        section_raw = raw.get(section_field.name, {})
        if not isinstance(section_raw, dict):
            problems.append(f"{origin}: [{section_field.name}] must be a table")
            section_raw = {}
        sections[section_field.name] = _build_section(
            section_field.name, section_type, section_raw, env, origin, problems
        )
    for unknown in sorted(set(raw) - {f.name for f in fields(Settings)}):
        problems.append(f"{origin}: unknown section [{unknown}]")

    settings = Settings(**sections)
    problems.extend(_validate(settings))
    if problems:
        raise ConfigError(problems)
    return settings


def _build_section(
    name: str,
    section_type: type[Any],
    raw: dict[str, Any],
    env: Mapping[str, str],
    origin: str,
    problems: list[str],
) -> Any:
    assert is_dataclass(section_type)
    default = section_type()
    values: dict[str, Any] = {}
    hints = get_type_hints(section_type)
    known = {f.name for f in fields(section_type)}
    for unknown in sorted(set(raw) - known):
        problems.append(f"{origin}: unknown setting {name}.{unknown}")
    for item in fields(section_type):
        kind = hints[item.name]
        env_name = f"{ENV_PREFIX}{name.upper()}_{item.name.upper()}"
        if env_name in env:
            value: Any = env[env_name]
            where = f"${env_name}"
        elif item.name in raw:
            value = raw[item.name]
            where = f"{origin}: {name}.{item.name}"
        else:
            continue
        converted = _convert(value, kind)
        if converted is None:
            expected = "true or false" if kind is bool else kind.__name__
            problems.append(f"{where}: expected {expected}, got {value!r}")
            continue
        values[item.name] = converted
    return replace(default, **values)


# The words a boolean setting may be written as (an environment variable is always text).
_BOOLEAN_WORDS: Final = {
    "true": True,
    "1": True,
    "yes": True,
    "false": False,
    "0": False,
    "no": False,
}


def _convert(value: Any, kind: type[Any]) -> Any:
    """Coerce a TOML or environment value to the field's type; None if impossible."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _BOOLEAN_WORDS.get(value.strip().lower())
        return None
    if kind is str:
        return value if isinstance(value, str) else None
    if kind is int:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return None
    if kind is float:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return float(value)
        try:
            return float(value) if isinstance(value, str) else None
        except ValueError:
            return None
    raise TypeError(f"unsupported setting type {kind}")


def _validate(settings: Settings) -> list[str]:
    problems: list[str] = []
    for name, port in (
        ("ami.port", settings.ami.port),
        ("fastagi.port", settings.fastagi.port),
        ("http.port", settings.http.port),
    ):
        if not 0 <= port <= 65535:
            problems.append(f"{name}: {port} is not a TCP port (0-65535)")
    if settings.ami.auth not in _AMI_AUTH:
        problems.append(f"ami.auth: {settings.ami.auth!r} is not one of {sorted(_AMI_AUTH)}")
    problems.extend(_validate_observability(settings))
    if settings.server.event_loop not in EVENT_LOOPS:
        problems.append(
            f"server.event_loop: {settings.server.event_loop!r} is not one of {list(EVENT_LOOPS)}"
        )
    if settings.server.log_level.upper() not in _LOG_LEVELS:
        problems.append(
            f"server.log_level: {settings.server.log_level!r} is not one of {sorted(_LOG_LEVELS)}"
        )
    for name, seconds in (
        ("ami.connect_timeout", settings.ami.connect_timeout),
        ("ami.action_timeout", settings.ami.action_timeout),
        ("ami.ping_interval", settings.ami.ping_interval),
        ("fastagi.command_timeout", settings.fastagi.command_timeout),
        ("database.connect_timeout", settings.database.connect_timeout),
    ):
        if seconds <= 0:
            problems.append(f"{name}: must be positive, got {seconds}")
    if settings.metrics.summary_every_s < 0:
        problems.append(
            f"metrics.summary_every_s: 0 (never) or more, got {settings.metrics.summary_every_s}"
        )
    if settings.auth.session_idle_s < 60:
        problems.append(
            f"auth.session_idle_s: at least 60 s (sessions are touched once a minute), "
            f"got {settings.auth.session_idle_s}"
        )
    if settings.auth.login_attempts_per_minute < 1:
        problems.append(
            "auth.login_attempts_per_minute: must be at least 1, "
            f"got {settings.auth.login_attempts_per_minute}"
        )
    if settings.redis.url and not settings.redis.url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        problems.append(f"redis.url: {settings.redis.url!r} is not a redis:// URL")
    if settings.database.dsn and not settings.database.dsn.startswith(
        ("postgres://", "postgresql://")
    ):
        problems.append(f"database.dsn: {settings.database.dsn!r} is not a postgresql:// DSN")
    return problems


_LOG_FORMATS = ("text", "json")
# A guessable token would open the centre's live figures to anyone who can reach the port.
_MIN_METRICS_TOKEN = 16


def _validate_observability(settings: Settings) -> list[str]:
    """The log format and the /metrics token."""
    problems: list[str] = []
    if settings.server.log_format not in _LOG_FORMATS:
        problems.append(
            f"server.log_format: {settings.server.log_format!r} is not one of {list(_LOG_FORMATS)}"
        )
    token = settings.http.metrics_token
    if token and (len(token) < _MIN_METRICS_TOKEN or token != token.strip()):
        problems.append(
            f"http.metrics_token: at least {_MIN_METRICS_TOKEN} characters without surrounding"
            " spaces (e.g. the output of `openssl rand -hex 24`)"
        )
    return problems
