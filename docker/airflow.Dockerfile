# syntax=docker/dockerfile:1.7
# Airflow image for the Helm chart (infra/k8s/airflow/values.yaml): the official Airflow 3.3.2 image
# plus the orchestrator extra (providers pinned by uv.lock), the DAGs and the plugins. Never TensorFlow:
# ML steps run in the trainer image.
# Build from the repository root: docker build -f docker/airflow.Dockerfile -t tierflow-airflow:0.1.0 .
FROM apache/airflow:slim-3.3.2-python3.11
USER 0
COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /usr/local/bin/uv
USER 50000
WORKDIR /opt/tierflow
COPY --chown=50000:0 pyproject.toml uv.lock README.md ./
# Export the locked orchestrator requirements and install them into the image's Python next to Airflow.
RUN uv export --frozen --no-dev --no-hashes --no-emit-project --extra airflow -o /tmp/requirements.txt \
    && uv pip install --no-cache --python "$(command -v python)" -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY --chown=50000:0 runtime ./runtime
COPY --chown=50000:0 plugins ./plugins
COPY --chown=50000:0 infra ./infra
COPY --chown=50000:0 ml ./ml
COPY --chown=50000:0 tierflow_cli ./tierflow_cli
RUN uv pip install --no-cache --no-deps --python "$(command -v python)" .
COPY --chown=50000:0 dags /opt/airflow/dags
COPY --chown=50000:0 infra/k8s/base/tier-pod-template.yaml /opt/tierflow/k8s/tier-pod-template.yaml
ENV AIRFLOW__CORE__LOAD_EXAMPLES=False PYTHONUNBUFFERED=1
