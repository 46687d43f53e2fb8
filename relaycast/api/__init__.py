"""The HTTP API: ``relaycast api`` (FastAPI on uvicorn)."""
