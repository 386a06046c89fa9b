"""Which dataset version a pipeline run trains on."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)
MANIFEST_SUFFIX = "manifest.json"


def uri_from_events(events: Any) -> str | None:
    """The manifest URI carried by the newest Asset event that triggered the run (extra "manifest_uri")."""
    if not events:
        return None
    newest: tuple[Any, str] | None = None
    for evs in events.values():
        for ev in evs:
            extra = getattr(ev, "extra", None) or {}
            uri = extra.get("manifest_uri") or extra.get("uri")
            if uri and (newest is None or str(ev.timestamp) > str(newest[0])):
                newest = (ev.timestamp, uri)
    return newest[1] if newest else None


def newest_manifest_key(keys: list[str]) -> str | None:
    """Dataset versions are named by time (sortable); the newest manifest has the greatest key."""
    manifests = sorted(k for k in keys if k.endswith(MANIFEST_SUFFIX))
    return manifests[-1] if manifests else None


def resolve_dataset_uri(param: str, events: Any = None, settings: Any = None) -> str:
    """The `dataset` param, else the triggering Asset event, else the newest manifest in S3, else the
    built-in Fashion-MNIST train split (so a first manual run works before anything was ingested)."""
    if param:
        return param
    uri = uri_from_events(events)
    if uri:
        return uri
    from plugins.hooks.datasets import DatasetStoreHook
    from runtime.settings import get_settings

    settings = settings or get_settings()
    store = DatasetStoreHook(settings=settings).store()
    try:
        key = newest_manifest_key(list(store.keys(f"{settings.ingest.prefix}/{settings.app}/")))
    except Exception as exc:  # noqa: BLE001 - any S3 trouble: say so and use the built-in data
        log.warning("cannot list datasets in S3 (%s); training on the built-in Fashion-MNIST", exc)
        key = None
    if key:
        return store.uri(key)
    log.warning("no ingested dataset found; training on the built-in Fashion-MNIST train split")
    return "fashion-mnist"
