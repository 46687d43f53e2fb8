"""relaycast: stream Celery workflow logs and admin events to browsers in real time."""

__version__ = "0.1.0"
