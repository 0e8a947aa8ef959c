# CandleThrob ingestion image: the nightly update as a one-shot container.
#
#   docker build -t candlethrob:latest .
#   docker run --rm --env-file .env -v candlethrob-data:/app/data candlethrob:latest
#   docker run --rm candlethrob:latest python /app/CandleThrob/ingestion/ingest_data.py --demo
#
# Oracle Autonomous Database: mount the unzipped wallet read-only at
# /opt/oracle/wallet and point TNS_ADMIN at it (not set here, so SQLite and
# PostgreSQL runs do not depend on a wallet directory):
#
#   docker run --rm -v /opt/oracle/wallet:/opt/oracle/wallet:ro \
#     -e TNS_ADMIN=/opt/oracle/wallet -e ORACLE_USER -e ORACLE_PASSWORD \
#     -e ORACLE_DSN -e ORACLE_WALLET_PASSWORD -e POLYGON_API_KEY candlethrob:latest
#
# python-oracledb runs in thin mode here; the image has no Oracle Instant
# Client, so ORA_PYTHON_DRIVER_TYPE=thick is not supported in it.
#
# Exit codes are the tool's own (0 ok, 1 some tickers incomplete, 2 config,
# 3 fatal, 4 lock held, 130/143 interrupted). The exec-form CMD makes the tool
# PID 1, so `docker stop` sends its SIGTERM to the tool itself, whose own
# handler stops the run and keeps the checkpoint (PID 1 gets no default action
# for SIGTERM, so that handler is what makes the stop prompt).

# Pinned to a patch release and bumped deliberately; append @sha256:<digest>
# for byte-identical rebuilds.
FROM python:3.11.11-slim-bookworm

LABEL org.opencontainers.image.title="candlethrob" \
      org.opencontainers.image.description="Daily OHLCV bars for the S&P 500 and 20 ETFs from Polygon.io into SQL" \
      io.candlethrob.oracle-wallet-mount="/opt/oracle/wallet"

ENV PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# A fixed uid/gid so volume ownership is predictable across rebuilds and hosts.
RUN groupadd --system --gid 10001 candlethrob \
    && useradd --system --uid 10001 --gid candlethrob --home-dir /app \
       --no-create-home --shell /usr/sbin/nologin candlethrob

# Dependencies first: their layer is reused while only the code changes.
COPY requirements.lock /app/requirements.lock
RUN pip install --no-cache-dir --require-hashes -r /app/requirements.lock

COPY CandleThrob/ /app/CandleThrob/

# The default DATABASE_URL is an SQLite file at ./data/candlethrob.db; the code
# stays root-owned and read-only to the runtime user, only data/ is writable.
# No VOLUME instruction: it would add an anonymous volume to every run that
# nobody removes; mount a named volume at /app/data to keep the SQLite file.
RUN mkdir -p /app/data /opt/oracle/wallet \
    && chown candlethrob:candlethrob /app/data

# Numeric, so Kubernetes runAsNonRoot and hosts without this user can verify it.
USER 10001:10001

CMD ["python", "/app/CandleThrob/ingestion/ingest_data.py"]
