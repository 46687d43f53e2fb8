"""Imports go one way: config ← broadcasters ← workflows ← tasks ← relaycast.api ← relaycast (the
public surface and the CLI) ← benchmarks; ``relaycast._layout`` (which finds a user's module
shadowing relaycast's packages, so it must import none of them) sits below them all.

Every import counts, those inside functions too: an import hidden in a function still ties
the two layers together. A layer is handed what it needs from the layer that wires it (the
emitter gets its ``enqueue`` from ``tasks``), never reaches up for it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support.workers import run_python

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("relaycast._layout", "config", "broadcasters", "workflows", "tasks", "relaycast.api",
          "relaycast", "benchmarks")


def _layer(module: str) -> str | None:
    """The layer ``module`` belongs to: the longest layer name it is, or is inside."""
    matches = [layer for layer in LAYERS if module == layer or module.startswith(layer + ".")]
    return max(matches, key=len, default=None)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _upward_imports() -> list[str]:
    problems = []
    for top in sorted({layer.split(".")[0] for layer in LAYERS}):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            own = _layer(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            assert own is not None
            for line, module in _imports(path):
                theirs = _layer(module)
                if theirs is not None and LAYERS.index(theirs) > LAYERS.index(own):
                    problems.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return problems


def test_no_layer_imports_a_layer_above_it() -> None:
    assert _upward_imports() == []


def test_the_check_sees_an_import_hidden_in_a_function(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from tasks.broadcast import enqueue_batch\n")
    assert _imports(sample) == [(2, "tasks.broadcast")]


@pytest.mark.parametrize("module", ["relaycast", "relaycast.cli", "relaycast.api.app", "tasks.reporting"])
def test_importing_the_cli_or_the_api_never_builds_the_celery_app(module: str) -> None:
    script = (f"import sys, {module}\n"
              "print('tasks.celery_app' in sys.modules)\n")
    # A broker URL Celery would choke on: importing must not even look at it.
    result = run_python("-c", script, env={"CELERY_BROKER_URL": "amqp://nowhere.invalid//"},
                        cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
