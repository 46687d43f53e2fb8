"""Throughput benchmark: relaycast's batched design against one Celery task per line.

``python -m benchmarks [--quick]`` (from a checkout) starts its own redis-server,
soketi (Pusher protocol, 10 KB event limit), SQLite database, Celery workers and a
WebSocket subscriber on loopback, runs both designs against them and prints the figures
and the ratios relaycast/baseline. See :mod:`benchmarks.__main__` for the options.

Modules:

* :mod:`benchmarks.__main__`: the command: preflight, the run from start to report.
* :mod:`benchmarks.options`: the command line and the plan it becomes.
* :mod:`benchmarks.context`: the servers, environment and subscriber every phase runs against.
* :mod:`benchmarks.designs`: each design's worker and phases; the unwatched run.
* :mod:`benchmarks.phase`: one phase in steps: producer and warm-up, measuring, the figures.
* :mod:`benchmarks.harness`: servers, workers, the timed subscriber, RSS sampling,
  soketi's request counter, the progress bar.
* :mod:`benchmarks.procfs`: CPU time, memory and children of processes, from /proc.
* :mod:`benchmarks.unwind`: signals unwind a run; its cleanup is not cut short (also
  used by :mod:`benchmarks.prune`).
* :mod:`benchmarks.producer`: the workflow side, a separate process that emits the lines
  and times the emit calls.
* :mod:`benchmarks.baseline`: the one-task-per-line Celery task (queue ``baseline``).
* :mod:`benchmarks.report`: statistics, the results table, targets.
* :mod:`benchmarks.profiling`: optional py-spy sampling of the producer and the workers,
  summarised per hot path.
* :mod:`benchmarks.prune`: ``python -m benchmarks.prune``, what retention costs a workflow.
"""
