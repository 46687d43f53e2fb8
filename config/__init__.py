"""Configuration: the :class:`Settings` object, read from the environment and ``.env``.

Not built once: :func:`load_settings` reads them afresh at every call, and nothing here
caches the result. Each entry point builds its own and passes it (or what it builds from
it) down: the ``relaycast`` CLI's ``main``, the Celery app module (``tasks.celery_app``)
and ``tasks.runtime.settings()`` (once per worker process). Where nothing hands one over,
the code calls :func:`load_settings` itself: ``workflows.process`` (the emitter of a process
the Celery app did not wire, such as a plain script using ``LogStream``),
``workflows.capture`` (``RELAYCAST_CAPTURE``, in a workflow's process) and
``benchmarks.baseline``.
"""

from config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
