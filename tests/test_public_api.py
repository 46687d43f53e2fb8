"""The public surface for users' code (``from relaycast import ...``), users' workflow modules
(``RELAYCAST_WORKFLOWS``), a user's modules shadowing relaycast's packages, and what the
wheel installs. Real processes: a plain script, ``celery -A relaycast worker``, the CLI,
pip into a fresh venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from support.pusher_ws import Subscriber
from support.runs import run_env, wait_for_lines
from support.servers import Soketi
from support.workers import (
    CELERY,
    CeleryWorker,
    Started,
    one_line_error,
    project_env,
    relaycast_cli,
    run_python,
)

from workflows.store import LogStore

REPO = Path(__file__).resolve().parents[1]
SubscriberFactory = Callable[..., Subscriber]

NIGHTLY = '''
"""Acme's nightly job."""
from relaycast import LogStream, workflow


@workflow("nightly")
def nightly(log: LogStream, *, n: int = 3, label: str = "x") -> int:
    """Counts to n."""
    for i in range(n):
        log.info("step", i=i, label=label)
    return n
'''


def _project(root: Path, **files: str) -> Path:
    """A user's project directory: ``files`` by relative path (``acme/jobs.py``)."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_a_plain_script_importing_only_relaycast_broadcasts_every_line_live(
        broker: str, sqlite_url: str, soketi: Soketi, subscriber_factory: SubscriberFactory,
        workers: Started, open_store: Callable[[str], LogStore], tmp_path: Path) -> None:
    # No beat and a sweeper bound of an hour: only the live path can deliver these lines.
    env = run_env(broker, sqlite_url, **soketi.env(), RELAYCAST_BROADCASTERS="pusher,log",
                  RELAYCAST_SWEEP_AFTER_S="3600")
    workers.start(CeleryWorker(env, queues="broadcast", concurrency=1))
    run_id = f"script-{uuid.uuid4().hex[:8]}"
    subscriber = subscriber_factory()
    subscriber.subscribe(f"private-logs-{run_id}")
    script = _project(tmp_path, **{"job.py": f'''
        from relaycast import LogStream

        with LogStream("{run_id}") as log:
            for i in range(200):
                log.info("line", i=i)
        '''}) / "job.py"
    result = run_python(str(script), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no broadcast queue" not in result.stderr
    received = wait_for_lines(subscriber, f"private-logs-{run_id}", 200)
    assert sorted(set(received)) == list(range(1, 201))
    assert [line.seq for line in open_store(sqlite_url).lines(run_id)] == list(range(1, 201))


def test_the_public_names_are_the_layers_own_objects() -> None:
    script = ("import relaycast, workflows.base as b, workflows.log_stream as s, "
              "workflows.admin_events as a, workflows.app_events as e\n"
              "print(relaycast.LogStream is s.LogStream, relaycast.workflow is b.workflow, "
              "relaycast.step is b.step, relaycast.admin_event is a.emit, "
              "relaycast.broadcast is e.broadcast)\n")
    result = run_python("-c", script, env={}, cwd=REPO)
    assert result.stdout.split() == ["True"] * 5, result.stderr


def test_workflows_lists_the_users_workflows_with_parameters_and_no_examples(
        tmp_path: Path) -> None:
    project = _project(tmp_path, **{"acme/__init__.py": "", "acme/jobs.py": NIGHTLY})
    result = relaycast_cli("workflows", "--json", env={"RELAYCAST_WORKFLOWS": "acme.jobs"},
                           cwd=project)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [w["name"] for w in listed] == ["nightly"], "the examples are not registered"
    assert listed[0] == {
        "name": "nightly", "task": "workflows.nightly", "module": "acme.jobs",
        "doc": "Counts to n.",
        "params": [{"name": "n", "type": "int", "default": 3, "required": False},
                   {"name": "label", "type": "str", "default": "x", "required": False}]}
    text = relaycast_cli("workflows", env={"RELAYCAST_WORKFLOWS": "acme.jobs"}, cwd=project)
    assert "nightly  (acme.jobs)  n: int = 3, label: str = 'x'" in text.stdout


def test_run_checks_the_users_workflow_parameters(tmp_path: Path, broker: str,
                                                  sqlite_url: str) -> None:
    project = _project(tmp_path, **{"acme/__init__.py": "", "acme/jobs.py": NIGHTLY})
    env = run_env(broker, sqlite_url, RELAYCAST_WORKFLOWS="acme.jobs")
    bad = relaycast_cli("run", "nightly", "--param", "n=three", env=env, cwd=project)
    assert bad.returncode == 2
    assert one_line_error(bad) == "relaycast: n must be int, not str 'three'"
    unknown = relaycast_cli("run", "etl", env=env, cwd=project)
    assert one_line_error(unknown) == "relaycast: no workflow 'etl' (known: nightly)"
    good = relaycast_cli("run", "nightly", "--param", "n=3", "--run-id", "n-1", env=env, cwd=project)
    assert good.returncode == 0, good.stderr
    assert "run id:  n-1" in good.stdout


def test_a_worker_registers_the_users_workflows_and_no_examples(
        broker: str, sqlite_url: str, workers: Started, tmp_path: Path,
        open_store: Callable[[str], LogStore]) -> None:
    project = _project(tmp_path, **{"acme/__init__.py": "", "acme/jobs.py": NIGHTLY})
    env = run_env(broker, sqlite_url, RELAYCAST_WORKFLOWS="acme.jobs",
                  RELAYCAST_BROADCASTERS="log")
    workers.start(CeleryWorker(env, concurrency=1, cwd=project))
    registered = subprocess.run([CELERY, "-A", "relaycast", "inspect", "registered", "--json"],
                                env=project_env(env), cwd=project, capture_output=True,
                                text=True, timeout=60, check=False)
    assert registered.returncode == 0, registered.stderr
    names = {task for tasks in json.loads(registered.stdout).values() for task in tasks}
    assert "workflows.nightly" in names
    assert not {"workflows.etl", "workflows.burst", "workflows.fanout"} & names
    started = relaycast_cli("run", "nightly", "--param", "n=4", "--run-id", "nightly-1",
                            env=env, cwd=project)
    assert started.returncode == 0, started.stderr
    follow = relaycast_cli("logs", "nightly-1", "--follow", env=env, cwd=project, timeout_s=120)
    assert follow.returncode == 0, follow.stderr
    assert [line.data.get("i") for line in open_store(sqlite_url).lines("nightly-1")] == [0, 1, 2, 3]


@pytest.mark.parametrize("command", [["relaycast", "workflows"], ["celery", "worker"]])
def test_a_workflow_module_that_fails_to_import_stops_start_up_in_one_line(
        command: list[str], tmp_path: Path, broker: str, sqlite_url: str) -> None:
    project = _project(tmp_path, **{"broken.py": "import no_such_library_here\n"})
    env = run_env(broker, sqlite_url, RELAYCAST_WORKFLOWS="broken")
    argv = ([sys.executable, "-m", "relaycast", "workflows"] if command[0] == "relaycast"
            else [CELERY, "-A", "relaycast", "worker", "-Q", "broadcast"])
    result = subprocess.run(argv, env=project_env(env), cwd=project, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert ("relaycast: RELAYCAST_WORKFLOWS: cannot import 'broken': ModuleNotFoundError: "
            "No module named 'no_such_library_here'") in result.stderr.splitlines()


def test_a_users_config_py_stops_a_script_with_one_line_naming_it(tmp_path: Path) -> None:
    project = _project(tmp_path, **{"config.py": "DEBUG = True\n", "tasks.py": "x = 1\n"})
    result = run_python("-c", "from relaycast import LogStream", env={}, cwd=project)
    assert result.returncode == 2
    assert one_line_error(result) == (
        "relaycast: ./config.py shadows relaycast's 'config' package (it comes first on "
        "sys.path): rename it (or move it into your own package, e.g. acme/config.py), or run "
        "from another directory")
    elsewhere = run_python("-c", "import sys; sys.path.remove(''); from relaycast import LogStream",
                           env={}, cwd=project)
    assert elsewhere.returncode == 0, elsewhere.stderr


def test_the_worker_command_beside_a_users_tasks_py_starts_relaycasts_app(
        tmp_path: Path, broker: str, sqlite_url: str) -> None:
    marker = tmp_path / "imported"
    project = _project(tmp_path, **{
        "config.py": "DEBUG = True\n",
        "tasks.py": f"open({str(marker)!r}, 'w').write('user tasks.py was imported')\n"})
    env = run_env(broker, sqlite_url)
    # The README's command, Celery's console script: the current directory is on sys.path
    # only while Celery imports `relaycast`, which builds nothing until asked for its app.
    report = subprocess.run([CELERY, "-A", "relaycast", "report"], env=project_env(env),
                            cwd=project, capture_output=True, text=True, timeout=60, check=False)
    assert report.returncode == 0, report.stderr
    assert "'task': 'relaycast.health'" in report.stdout, "relaycast's beat schedule"
    assert "tasks.broadcast" in report.stdout, "relaycast's include list"
    assert not marker.exists()
    # The CLI is not affected by the current directory either.
    status = relaycast_cli("workflows", env=env, cwd=project)
    assert status.returncode == 0, status.stderr
    assert not marker.exists()


def test_the_wheel_installs_relaycast_and_its_four_packages_only(tmp_path: Path) -> None:
    # Built from a copy, so that the build leaves nothing in the checkout.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "node_modules", "artifacts", "build", "*.egg-info", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True,
                           timeout=300, check=False, env=env)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("relaycast-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True, timeout=300, check=False, env=env)
    assert installed.returncode == 0, installed.stderr[-2000:]
    site = next(venv.glob("lib/python3*/site-packages"))
    ours = {"relaycast", "config", "broadcasters", "tasks", "workflows"}
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()
                if not name.split("/")[0].endswith(".dist-info")}
    assert tops == ours
    assert not (site / "api").exists()
    assert not (site / "benchmarks").exists()
    assert ours <= {p.name for p in site.iterdir()}
    static = REPO / "relaycast" / "api" / "static"
    files = [p.relative_to(static) for p in static.rglob("*") if p.is_file()]
    assert "client/hub.js" in {f.as_posix() for f in files}
    assert [f for f in files if not (site / "relaycast" / "api" / "static" / f).is_file()] == []
