# syntax=docker/dockerfile:1.7
# Tier worker image: `tierflow worker --tier T --model-uri U --http-port P` (the Kubernetes rollout
# backend sets command/args; ENTRYPOINT is only for running it by hand).
# Build from the repository root: docker build -f docker/tier.Dockerfile -t tierflow-tier:0.1.0 .
FROM python:3.11.14-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first (cached layer), then the project itself: runtime + ml extras only, no Airflow.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project --extra runtime --extra ml
COPY ml ./ml
COPY runtime ./runtime
COPY plugins ./plugins
COPY infra ./infra
COPY tierflow_cli ./tierflow_cli
RUN uv sync --frozen --no-dev --no-editable --extra runtime --extra ml

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 tierflow \
    && useradd --system --uid 10001 --gid tierflow --home-dir /tmp --shell /usr/sbin/nologin tierflow
COPY --from=build /opt/venv /opt/venv
# Read-only root file system in the pod: everything written goes to /tmp (an emptyDir).
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp TIERFLOW_HOME=/tmp/tierflow \
    KERAS_HOME=/tmp/keras TF_CPP_MIN_LOG_LEVEL=2
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["tierflow"]
CMD ["worker", "--help"]
