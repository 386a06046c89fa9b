"""Airflow hooks over Connections, falling back to `runtime.settings` where no Connection is defined.

- `datasets.DatasetStoreHook`: the amazon provider's `S3Hook` (Connection `tierflow_s3`) -> `s3.DatasetStore`.
- `kafka.KafkaClusterHook`: the apache-kafka provider's `KafkaBaseHook` (Connection `tierflow_kafka`).
- `mlflow.MlflowRegistryHook`: a `BaseHook` over an http Connection (`tierflow_mlflow`).

`s3.DatasetStore` itself imports no Airflow: the ML environment (external Python, the trainer image,
which has no Airflow) reads dataset shards through it with the settings' credentials.
"""
