"""The dataset store as an Airflow hook: the amazon provider's `S3Hook` over an ``aws`` Connection.

Connection ``tierflow_s3`` (type ``aws``): login/password = access key id/secret (or any credential
the provider supports: role, profile, web identity), extra ``{"endpoint_url": "http://minio:9000",
"region_name": "us-east-1", "bucket": "tierflow"}``. Without it, ``Settings.s3`` (the embedded stack).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.config import Config

from plugins.hooks.base import fallback_settings, find_connection
from plugins.hooks.s3 import CLIENT_CONFIG, DatasetStore, register_known_sha256, s3_client


class DatasetStoreHook(S3Hook):
    """`S3Hook` whose client (path-style addressing, checksums only where required) falls back to
    ``Settings.s3`` when the Connection is not defined; ``store()`` gives the ingest's `DatasetStore`."""

    default_conn_name = "tierflow_s3"
    hook_name = "tierflow dataset store (S3)"

    def __init__(self, aws_conn_id: str | None = default_conn_name, *, settings: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("config", Config(**CLIENT_CONFIG))
        super().__init__(aws_conn_id=aws_conn_id, **kwargs)
        self.settings = fallback_settings(settings)

    @cached_property
    def connection(self) -> Any | None:
        return find_connection(self.aws_conn_id)

    @cached_property
    def conn(self) -> Any:  # the boto3 client every S3Hook method uses
        if self.connection is None:
            return s3_client(self.settings)
        client = super().conn
        register_known_sha256(client)
        return client

    def bucket(self) -> str:
        extra = self.connection.extra_dejson if self.connection is not None else {}
        return extra.get("bucket") or self.settings.s3.bucket

    def s3_settings(self) -> Any:
        """``Settings.s3`` of the Connection's endpoint, region, bucket and (frozen) credentials, for
        processes without Airflow (the ML tasks); the settings' own when no Connection is defined.
        An endpoint of ``""`` means the provider's own (AWS S3)."""
        if self.connection is None:
            return self.settings.s3
        from pydantic import SecretStr

        config = self.conn_config
        creds = self.get_credentials(config.region_name)
        return self.settings.s3.model_copy(update={
            "endpoint_url": config.get_service_endpoint_url("s3") or "", "bucket": self.bucket(),
            "region": config.region_name or self.settings.s3.region, "access_key_id": creds.access_key,
            "secret_access_key": SecretStr(creds.secret_key) if creds.secret_key else None,
            "session_token": SecretStr(creds.token) if creds.token else None})

    def store(self) -> DatasetStore:
        return DatasetStore(self.get_conn(), self.bucket())

    def test_connection(self) -> tuple[bool, str]:
        """The bucket answers (S3-compatible servers have no STS, so not the provider's identity check)."""
        try:
            self.get_conn().head_bucket(Bucket=self.bucket())
        except Exception as exc:  # noqa: BLE001 - reported to the UI as text
            return False, f"bucket {self.bucket()!r}: {exc}"
        return True, f"bucket {self.bucket()!r} reachable"
