"""Throughput benchmark: relaycast's batched design against one Celery task per line.

``python -m benchmarks [--quick]`` (from a checkout) starts its own redis-server,
soketi (Pusher protocol, 10 KB event limit), SQLite database, Celery workers and a
WebSocket subscriber on loopback, runs both designs against them and prints the figures
and the ratios relaycast/baseline. See :mod:`benchmarks.__main__` for the options.

Modules:

* :mod:`benchmarks.__main__`: the command line and the run (phases, waits, cleanup).
* :mod:`benchmarks.harness`: servers, workers, the timed subscriber, RSS sampling,
  soketi's request counter, the progress bar.
* :mod:`benchmarks.producer`: the workflow side, a separate process that emits the lines
  and times the emit calls.
* :mod:`benchmarks.baseline`: the one-task-per-line Celery task (queue ``baseline``).
* :mod:`benchmarks.report`: statistics, the results table, targets.
* :mod:`benchmarks.profiling`: optional py-spy sampling of the producer and the workers.
"""
