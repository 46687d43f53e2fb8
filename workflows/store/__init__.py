"""SQL storage of log lines and runs: the source of truth.

SQLite (a file) by default, PostgreSQL through ``DATABASE_URL``. The schema is managed by
Alembic migrations shipped in :mod:`workflows.migrations`, applied by
``relaycast db upgrade`` and automatically the first time a process opens the store.

Sequence numbers are allocated where the lines are stored, in the same transaction (see
:meth:`LogStore.append`): a run written by many processes on many hosts at once gets
contiguous seqs from 1, every line exactly once, and a line that fails to store is never
silent.

One module per concern, one object over them all (:class:`LogStore`):

* :mod:`~workflows.store.engine`: engines and migrations;
* :mod:`~workflows.store.lines`: numbering and storing lines, reading them back;
* :mod:`~workflows.store.ledger`: the delivery ledger (outcomes, claims, replay selection);
* :mod:`~workflows.store.runs`: runs' start and end;
* :mod:`~workflows.store.health`: health history;
* :mod:`~workflows.store.viewer`: the runs list's queries;
* :mod:`~workflows.store.log_store`: :class:`LogStore` and its per-process cache.
"""

from workflows.store.engine import current_revision, head_revision, make_engine, upgrade
from workflows.store.lines import SeqConflict
from workflows.store.log_store import LogStore, store_for

__all__ = ["LogStore", "SeqConflict", "current_revision", "head_revision", "make_engine",
           "store_for", "upgrade"]
