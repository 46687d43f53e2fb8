"""Running a piece of a test in a child forked with ``os.fork()`` (as billiard's prefork pool
forks its workers), its answer brought back through a pipe."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def in_forked_child(report: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork; ``report()`` in the child (JSON), returned to the parent through a pipe. The
    child never returns into pytest; a child that fails fails the parent's assertion."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_fd)
            with os.fdopen(write_fd, "w") as pipe:
                json.dump(report(), pipe)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        raw = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, raw
    result: dict[str, Any] = json.loads(raw)
    return result
