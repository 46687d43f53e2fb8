"""Acme's nightly import: existing code, logging the way it always has.

Nothing here was rewritten for relaycast except the decorator: while the workflow runs, its
``logging`` records (its own logger, Celery's task logger, a library's) and its ``print()``
lines become lines of its run, beside what it writes through ``log``. The first attempt
fails to reach the warehouse and Celery retries it once (a ``warning`` line of the run says
so); the second goes through and tells the shop's page that the batch is out, with
``broadcast()``.
"""

from __future__ import annotations

import logging

from celery import current_task
from celery.utils.log import get_task_logger

from relaycast import LogStream, broadcast, workflow

logger = logging.getLogger("acme.nightly")
task_logger = get_task_logger(__name__)
#: A library's own logger, as e.g. an HTTP client or a database driver has.
library_logger = logging.getLogger("warehouse_client")


@workflow("nightly", autoretry_for=(ConnectionError,), max_retries=1, default_retry_delay=1)
def nightly(log: LogStream, *, orders: int = 3) -> int:
    """Import the night's orders and announce the shipment."""
    if current_task.request.retries == 0:
        raise ConnectionError("warehouse not reachable yet")
    log.info("nightly import starts", orders=orders)
    logger.info("connected to the warehouse")
    library_logger.warning("slow response from the warehouse (%d ms)", 850)
    for number in range(1, orders + 1):
        task_logger.info("imported order %d", number)
    print(f"imported {orders} orders")
    logger.debug("below the capture level: not a line of the run")
    broadcast("orders", "shipped", {"orders": orders})
    log.info("nightly import done", orders=orders)
    return orders
