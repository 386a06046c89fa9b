"""The S3 object store of datasets (SeaweedFS locally, any S3 at scale), through boto3.

No Airflow here: the ML environment reads shards through it too. Airflow tasks get their store from
`plugins.hooks.datasets.DatasetStoreHook` (an Airflow Connection, else these settings).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from runtime.settings import Settings

# botocore Config of every dataset client: path-style addressing (SeaweedFS, MinIO), and checksums only
# where the API requires them: SigV4 already hashes every payload (SHA-256, over plain HTTP) and shards
# carry their own SHA-256, so botocore's default extra CRC32 pass is waste.
CLIENT_CONFIG: dict[str, Any] = {
    "s3": {"addressing_style": "path"}, "retries": {"max_attempts": 5, "mode": "standard"},
    "connect_timeout": 5, "read_timeout": 60, "max_pool_connections": 16,
    "request_checksum_calculation": "when_required"}


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client for Settings.s3."""
    import boto3
    from botocore.config import Config

    s3 = settings.s3
    client = boto3.client(
        "s3", endpoint_url=s3.endpoint_url or None, region_name=s3.region,  # "" = the provider's own endpoint
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key.get_secret_value() if s3.secret_access_key else None,
        aws_session_token=s3.session_token.get_secret_value() if s3.session_token else None,
        config=Config(**CLIENT_CONFIG))
    return register_known_sha256(client)


def register_known_sha256(client: Any) -> Any:
    """Let `DatasetStore.put_bytes` hand SigV4 the SHA-256 it already has (see `_known_payload_sha256`)."""
    client.meta.events.register("before-sign.s3.PutObject", _known_payload_sha256)
    return client


_known = threading.local()  # .sha256: the hex SHA-256 of the body this thread is putting, if known


def _known_payload_sha256(request: Any, **_kw: Any) -> None:
    """Let SigV4 use a SHA-256 the caller already has instead of hashing the body again."""
    digest = getattr(_known, "sha256", None)
    if digest:
        request.headers["X-Amz-Content-SHA256"] = digest


def split_uri(uri: str) -> tuple[str, str]:
    """"s3://bucket/key" -> (bucket, key), with a message that says the expected form."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an S3 object URI: {uri!r} (expected s3://bucket/key)")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


class DatasetStore:
    """Bytes in, bytes out, in one bucket. Keys are plain strings; `uri()` gives s3://bucket/key."""

    def __init__(self, client: Any, bucket: str):
        self.client = client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> DatasetStore:
        return cls(s3_client(settings), settings.s3.bucket)

    def get_conn(self) -> Any:
        return self.client

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            self.client.create_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes, metadata: dict[str, str] | None = None,
                  content_type: str = "application/octet-stream", sha256: str | None = None) -> str:
        """Put one object; `sha256` (hex digest of data, if the caller has it) spares SigV4 a second hash
        (AWS S3 rejects a body that does not match it; SeaweedFS does not check, readers of shards verify
        the digest in the manifest)."""
        _known.sha256 = sha256
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=metadata or {},
                                   ContentType=content_type)
        finally:
            _known.sha256 = None
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def head(self, key: str) -> dict[str, str] | None:
        """User metadata of an object, or None if it does not exist."""
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=key).get("Metadata", {})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)
