"""Send one batch of log lines through a manager built from the environment; print the
lines delivered per broadcaster.

Run as a separate process (``python tests/support/send_batch.py RUN_ID N``) to show that a
flag set by one worker process is honoured by another.
"""

from __future__ import annotations

import json
import sys

from broadcasters.factory import build_manager
from broadcasters.packing import LogBatch
from config import load_settings


def main(run_id: str, lines: int) -> None:
    settings = load_settings()
    manager = build_manager(settings)
    batch = LogBatch(f"{settings.channel_prefix}logs-{run_id}", run_id, [
        {"seq": i, "ts": i, "level": "info", "message": f"line {i}", "data": {}}
        for i in range(1, lines + 1)
    ])
    report = manager.send([batch])
    delivered: dict[str, int] = {}
    for message, name in [*report.delivered, *report.logged]:
        first, last = message.seqs or (0, -1)
        delivered[name] = delivered.get(name, 0) + last - first + 1
    print(json.dumps({
        "delivered": delivered,
        "pending": len(report.pending),
        "failed": len(report.failed),
        "skipped": sorted(report.skipped),
        "state_errors": manager.state.errors,
    }))
    manager.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
