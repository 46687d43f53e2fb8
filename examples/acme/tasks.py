"""Acme's Celery app from before relaycast: Celery's conventional ``tasks.py``.

``celery -A tasks worker`` run here starts this app, as it always did. relaycast's worker is
``celery -A relaycast worker``: this file never stands in its way.
"""

from celery import Celery

import config

app = Celery("acme", broker=config.BROKER_URL)


@app.task
def add(x: int, y: int) -> int:
    return x + y
