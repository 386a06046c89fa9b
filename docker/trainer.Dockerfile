# syntax=docker/dockerfile:1.7
# ML trainer image: Airflow's ML tasks on Kubernetes (train, calibrate, partition, register) run here,
# and the MLflow tracking server (infra/k8s/platform/mlflow.yaml) uses it too (with psycopg for PostgreSQL).
# Build from the repository root: docker build -f docker/trainer.Dockerfile -t tierflow-trainer:0.1.0 .
FROM python:3.11.14-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project --extra ml --extra runtime
COPY ml ./ml
COPY runtime ./runtime
COPY plugins ./plugins
COPY infra ./infra
COPY tierflow_cli ./tierflow_cli
RUN uv sync --frozen --no-dev --no-editable --extra ml --extra runtime \
    && uv pip install --python /opt/venv/bin/python --no-cache "psycopg2-binary==2.9.10"

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 tierflow \
    && useradd --system --uid 10001 --gid tierflow --home-dir /tmp --shell /usr/sbin/nologin tierflow
COPY --from=build /opt/venv /opt/venv
# The Fashion-MNIST files are read from here when mounted (loaders read local files first).
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/tmp TIERFLOW_HOME=/tmp/tierflow \
    KERAS_HOME=/tmp/keras MPLBACKEND=Agg MPLCONFIGDIR=/tmp/matplotlib TF_CPP_MIN_LOG_LEVEL=2
USER 10001:10001
ENTRYPOINT ["tierflow"]
CMD ["ml", "--help"]
