"""Running workflows: ``demo``, ``run WORKFLOW``, ``workflows``.

The workflows known here are those of the modules in ``RELAYCAST_WORKFLOWS`` (imported as
the worker imports them); ``demo`` adds the examples (``workflows.examples``).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from broadcasters.wire import Channels
from config import Settings
from relaycast.cli.common import Unreachable, UsageError, param


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run a workflow end to end on embedded defaults "
                          "(the examples, and yours from RELAYCAST_WORKFLOWS)")
    demo.add_argument("--workflow", default="etl", help="workflow to run (default: etl)")
    demo.add_argument("--param", action="append", default=[], metavar="K=V", type=param)
    demo.add_argument("--verbose", action="store_true", help="also print each broadcast message")
    demo.set_defaults(handler=cmd_demo)

    run = sub.add_parser("run", help="enqueue a workflow; print its run id and channel")
    run.add_argument("workflow", metavar="WORKFLOW")
    run.add_argument("--param", action="append", default=[], metavar="K=V", type=param)
    run.add_argument("--run-id", default=None, help="default: WORKFLOW-<random>")
    run.set_defaults(handler=cmd_run)

    listed = sub.add_parser("workflows", help="the workflows known here (RELAYCAST_WORKFLOWS), "
                            "with their parameters")
    listed.add_argument("--json", action="store_true", help="a JSON list of workflow objects")
    listed.set_defaults(handler=cmd_workflows)


def load_workflows(settings: Settings, *extra: str) -> None:
    """Import the user's workflow modules (and ``extra`` ones) into this process."""
    from relaycast._layout import ensure_ours
    from workflows.registry import import_workflows

    ensure_ours()  # before the current directory goes on sys.path
    import_workflows([*settings.workflows, *extra])


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from relaycast.demo import render, run_demo
    from workflows.registry import EXAMPLES

    if not args.verbose:
        logging.getLogger("relaycast.broadcast").setLevel(logging.WARNING)
    load_workflows(settings, EXAMPLES)
    result = run_demo(settings, args.workflow, _workflow_params(args.workflow, args.param))
    print(render(result))
    ok = result.status in ("succeeded", "failed") and result.pending == 0
    return 0 if ok else 1


def _workflow_params(workflow: str, given: list[tuple[str, object]]) -> dict[str, object]:
    from workflows.base import InvalidParams, validate_params
    from workflows.registry import known

    if workflow not in known():
        names = ", ".join(known()) or "none: name your modules in RELAYCAST_WORKFLOWS"
        raise UsageError(f"no workflow {workflow!r} (known: {names})")
    try:
        return validate_params(workflow, dict(given))
    except InvalidParams as exc:
        raise UsageError(str(exc)) from None


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    import uuid

    if not settings.broker_url:
        raise UsageError("run needs a broker: set CELERY_BROKER_URL or REDIS_URL "
                         "(or try `relaycast demo`, which needs none)")
    load_workflows(settings)
    params = _workflow_params(args.workflow, args.param)
    channels = Channels(settings.channel_prefix)
    run_id = channels.validate_run_id(args.run_id or f"{args.workflow}-{uuid.uuid4().hex[:12]}")
    from tasks.celery_app import app  # the producer side of the broker
    from workflows.base import REGISTRY

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)
            REGISTRY[args.workflow].apply_async(kwargs={"run_id": run_id, **params},
                                                connection=connection)
    except Exception as exc:  # noqa: BLE001 - kombu's and the transport's errors alike
        raise Unreachable(f"broker unreachable at CELERY_BROKER_URL/REDIS_URL "
                          f"({type(exc).__name__}): the run was not enqueued") from None
    print(f"run id:  {run_id}")
    print(f"channel: {channels.logs(run_id)}")
    return 0


def cmd_workflows(settings: Settings, args: argparse.Namespace) -> int:
    """Every registered workflow: name, parameters with their types and defaults."""
    from workflows.registry import describe, known

    load_workflows(settings)
    described = [describe(name) for name in known()]
    if args.json:
        print(json.dumps(described, ensure_ascii=False))
        return 0
    if not described:
        print("no workflows: name the modules that define them in RELAYCAST_WORKFLOWS "
              "(e.g. RELAYCAST_WORKFLOWS=acme.jobs; workflows.examples for the examples)")
        return 0
    for item in described:
        params = ", ".join(_param_text(p) for p in item["params"]) or "no parameters"
        print(f"{item['name']}  ({item['module']})  {params}")
        if item["doc"]:
            print(f"    {item['doc']}")
    return 0


def _param_text(p: dict[str, Any]) -> str:
    text = p["name"] + (f": {p['type']}" if p["type"] else "")
    return text if p["required"] else f"{text} = {p['default']!r}"
