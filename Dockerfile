# ctiserver: `ctiserver run` in a container. docker-compose.yml runs it beside
# Asterisk 22, PostgreSQL 16 and Redis 7; docs/deployment.md explains the set-up.
#
#   docker build -t ctiserver .
#   docker run --network host -e CTISERVER_DATABASE_DSN=postgresql://... ctiserver
FROM python:3.11-slim

# PYTHONUTF8: logs and the CLI write Chinese names as UTF-8 whatever the locale.
ENV PYTHONUTF8=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The dependencies alone first, read from pyproject.toml: editing the code does
# not reinstall them.
COPY pyproject.toml ./
RUN python -c "import subprocess, sys, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
subprocess.check_call([sys.executable, '-m', 'pip', 'install', *deps])"

# Installed in place (editable): the server serves its pages from /app/web and
# reads its flows from /app/flows (which compose mounts from the host), beside
# the package (ctiserver/shipped.py), rather than from a wheel's own copy.
COPY README.md ctiserver.toml acd.example.toml wallboard.example.toml ./
COPY ctiserver ./ctiserver
COPY web ./web
COPY flows ./flows
RUN pip install --no-deps -e . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin ctiserver \
    && mkdir -p /app/data \
    && chown ctiserver:ctiserver /app/data

# data/: events spilled to disk while PostgreSQL is unreachable (keep it on a volume).
VOLUME ["/app/data"]
USER ctiserver
# HTTP (desktop, wallboard, API, /health, /metrics) and FastAGI (Asterisk's AGI()).
EXPOSE 8080 4573
# Migrations are applied at start; SIGTERM shuts down in order.
CMD ["ctiserver", "run"]
