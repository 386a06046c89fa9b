"""DatasetStore against the real SeaweedFS S3: a digest the caller already has is what SigV4 signs."""

from __future__ import annotations

import hashlib

import pytest

from plugins.hooks.s3 import DatasetStore
from runtime.settings import Settings

pytestmark = pytest.mark.integration


def test_put_with_known_sha256_is_signed_with_it_and_round_trips(s3_stack: Settings):
    store = DatasetStore.from_settings(s3_stack)
    sent: list[dict[str, str]] = []
    store.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_kw: sent.append(dict(request.headers)))
    data = bytes(range(256)) * 4000
    digest = hashlib.sha256(data).hexdigest()

    store.put_bytes("store-test/known.bin", data, {"sha256": digest}, sha256=digest)
    store.put_bytes("store-test/plain.bin", data[:100])

    assert store.get_bytes("store-test/known.bin") == data
    assert store.head("store-test/known.bin") == {"sha256": digest}
    assert store.get_bytes("store-test/plain.bin") == data[:100]
    signed = [h["X-Amz-Content-SHA256"] for h in sent]
    signed = [v.decode() if isinstance(v, bytes) else v for v in signed]
    # the given digest is reused; without one, botocore hashes the body itself (and the thread-local
    # digest of the first put does not leak into the second)
    assert signed == [digest, hashlib.sha256(data[:100]).hexdigest()]
    assert not any(k.lower().startswith("x-amz-checksum") for h in sent for k in h)  # no extra CRC pass
