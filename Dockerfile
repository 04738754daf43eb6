# Worker image for docker-compose.yml (not used by `make`, which runs without Docker).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY dripdrop_core dripdrop_core
COPY streams streams
COPY schemas schemas
COPY migrations migrations
RUN pip install --no-cache-dir .
CMD ["python", "-m", "streams.worker", "worker", "-l", "info", "--without-web"]
