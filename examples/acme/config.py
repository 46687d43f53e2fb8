"""Acme's own settings module, as many projects have one at the top of their tree.

relaycast has a top-level ``config`` package too. Run relaycast's commands here as the
README shows (``celery -A relaycast worker``, ``relaycast ...``): neither puts this directory
in the way of relaycast's packages. Acme's own code reads this file as ``config`` only in
processes of its own (``tasks.py``'s app), never inside a relaycast worker.
"""

import os

WAREHOUSE_URL = os.environ.get("ACME_WAREHOUSE_URL", "sqlite:///warehouse.db")
BROKER_URL = os.environ.get("ACME_BROKER_URL", "redis://localhost:6379/1")
