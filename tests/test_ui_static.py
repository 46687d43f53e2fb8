"""The viewer's static files as shipped: the vendored browser libraries are the pinned builds,
every file ships in the wheel, and no page loads anything from elsewhere."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from conftest import require

from relaycast.api.ui import STATIC_DIR

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("package", "build", "major"), [
    ("pusher-js", "dist/web/pusher.min.js", 8), ("socket.io-client", "dist/socket.io.min.js", 4)])
def test_the_vendored_browser_libraries_are_the_builds_pinned_in_tools(
        package: str, build: str, major: int) -> None:
    installed = REPO / "tools" / "node_modules" / package
    require(installed.exists(), f"{package} in tools/node_modules (run `npm ci` in tools/)")
    pinned = json.loads((REPO / "tools" / "package.json").read_text())["dependencies"][package]
    version = json.loads((installed / "package.json").read_text())["version"]
    assert re.fullmatch(rf"{major}\.\d+\.\d+", pinned), f"an exact {major}.x version"
    assert version == pinned
    name = build.rsplit("/", 1)[1]
    vendored = STATIC_DIR / "vendor" / name
    assert vendored.read_bytes() == (installed / build).read_bytes(), (
        "run `bash tools/vendor-browser-libs.sh` after changing a pinned version")
    licence = (STATIC_DIR / "vendor" / f"{name}.LICENSE.txt").read_text()
    assert f"{package} {version}" in licence
    assert "Permission is hereby granted" in licence


def test_every_static_file_ships_with_the_package() -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["relaycast.api"]
    files = {p for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert len(files) >= 10
    # Matched as setuptools does (a glob: "*" stops at "/"), not with fnmatch ("*" crosses it).
    shipped = {p for pattern in patterns for p in STATIC_DIR.parent.glob(pattern)}
    missing = sorted(p.relative_to(STATIC_DIR.parent).as_posix() for p in files - shipped)
    assert missing == []


def test_the_pages_load_nothing_from_elsewhere() -> None:
    external = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//|@import|url\(\s*["']?(?:https?:)?//|"""
                          r"""from\s+["'](?:https?:)?//|import\(\s*["'](?:https?:)?//""")
    ours = [p for p in STATIC_DIR.rglob("*") if p.suffix in (".html", ".js", ".css")
            and "vendor" not in p.relative_to(STATIC_DIR).parts]
    names = {p.relative_to(STATIC_DIR).as_posix() for p in ours}
    assert names >= {"index.html", "run.html", "relaycast.js", "run.js", "runs.js", "ui.css",
                     "client/http.js", "client/pusher.js", "client/socketio.js"}
    for path in ours:
        assert not external.search(path.read_text()), path.relative_to(STATIC_DIR).as_posix()
