"""A wheel carries the shipped files (web pages, flows, dialplans, example configurations)
and the installed package finds them there: built with pip from a copy of the source."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ctiserver.shipped import IN_SOURCE, SHIPPED, shipped_path

# What a build reads besides the package (MANIFEST.in for the sdist says the same).
BUILD_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "ctiserver.toml")

# Run by the installed copy, from a folder with no shipped files in it.
PROBE = """
import asyncio, json, sys
import ctiserver
from aiohttp.test_utils import TestClient, TestServer
from ctiserver.demo.centre import shipped_file
from ctiserver.http.app import WEB_DIR, build_app
from ctiserver.sim.scenario_run import SHIPPED_DIALPLAN

async def login_page():
    async def probe():
        return {}
    async with TestClient(TestServer(build_app(probe))) as client:
        response = await client.get("/login")
        return response.status, await response.text()

status, page = asyncio.run(login_page())
print(json.dumps({
    "package": ctiserver.__file__,
    "web": str(WEB_DIR),
    "dialplan": str(SHIPPED_DIALPLAN),
    "flows": str(shipped_file("flows").resolve()),
    "acd": str(shipped_file("acd.example.toml").resolve()),
    "login_status": status,
    "login_page": page,
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A copy, so the build leaves no build/ or egg-info in the working tree.
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(IN_SOURCE / "ctiserver", source / "ctiserver", ignore=ignore)
    for name in (*SHIPPED, *BUILD_FILES):
        if (IN_SOURCE / name).is_dir():
            shutil.copytree(IN_SOURCE / name, source / name, ignore=ignore)
        else:
            shutil.copy2(IN_SOURCE / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "--no-index", "--quiet", "--wheel-dir", str(out), str(source)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("ctiserver-*.whl")
    return built


def test_the_wheel_carries_every_shipped_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SHIPPED:
        top = IN_SOURCE / name
        files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        assert files, name
        for file in files:
            assert f"ctiserver/shipped/{file.relative_to(IN_SOURCE).as_posix()}" in names
    assert "ctiserver/store/migrations/0001_initial.sql" in names  # pyproject's package data


def test_the_installed_package_serves_and_runs_from_its_own_copy(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The unpacked wheel first on the path: it, not this source tree, is imported.
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONUTF8": "1"}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    found = json.loads(probe.stdout.splitlines()[-1])
    installed = site / "ctiserver"
    assert Path(found["package"]).parent == installed
    assert Path(found["web"]) == installed / "shipped" / "web"
    assert Path(found["dialplan"]) == installed / "shipped" / "dialplans" / "extensions.conf"
    assert Path(found["flows"]) == installed / "shipped" / "flows"
    assert Path(found["acd"]) == installed / "shipped" / "acd.example.toml"
    assert found["login_status"] == 200
    assert found["login_page"] == (shipped_path("web") / "login.html").read_text(encoding="utf-8")
    same = filecmp.dircmp(installed / "shipped" / "flows", IN_SOURCE / "flows")
    assert same.left_list == same.right_list and not same.diff_files


def test_shipped_path_refuses_what_is_not_shipped() -> None:
    assert shipped_path("web/desktop.html").is_file()
    with pytest.raises(ValueError, match="not under a shipped"):
        shipped_path("ctiserver.toml")
