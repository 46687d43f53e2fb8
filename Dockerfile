FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY broadcasters broadcasters
COPY tasks tasks
COPY workflows workflows
COPY relaycast relaycast
RUN pip install --no-cache-dir '.[postgres]'
RUN useradd --create-home relaycast
USER relaycast
CMD ["celery", "-A", "tasks", "worker", "-Q", "broadcast,workflows", "-E"]
