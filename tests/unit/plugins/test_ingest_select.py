"""The pure part of ingest's exactly-once argument: which shards a dataset version lists."""

from __future__ import annotations

from plugins.ingest import parse_shard_key, select_shards


def test_parse_shard_key_round_trips_ml_shards_names():
    from ml.shards import shard_key

    key = shard_key("app.training", 2, 100, 199, prefix="datasets/app/shards")
    assert parse_shard_key(key) == (2, 100, 199)
    assert parse_shard_key("datasets/app/shards/app.training/p2/notes.txt") is None


def test_newer_upload_replaces_overlapping_older_shards():
    crashed = ("k-old", 0, 100, 149, 1000)  # partial block uploaded, never committed
    rerun = ("k-new", 0, 100, 199, 2000)  # the re-run's full block, same start
    committed = ("k-0", 0, 0, 99, 500)
    other_partition = ("k-p1", 1, 100, 149, 900)
    chosen = select_shards([crashed, rerun, committed, other_partition])
    assert [c[0] for c in chosen] == ["k-0", "k-new", "k-p1"]


def test_older_leftover_beyond_the_rerun_is_dropped_only_if_it_overlaps():
    # A crashed run with another block size left [0-2047]; the re-run wrote [0-999] and [1000-1999].
    chosen = select_shards([("big", 0, 0, 2047, 1), ("a", 0, 0, 999, 5), ("b", 0, 1000, 1999, 6)])
    assert [c[0] for c in chosen] == ["a", "b"]  # 2000-2047 are not committed: the next run reads them
    ranges = [(c[2], c[3]) for c in chosen]
    assert all(r1[1] < r2[0] for r1, r2 in zip(ranges, ranges[1:], strict=False))


def test_bad_ingest_settings_fail_before_any_io_with_what_to_fix():
    import pytest

    from plugins.ingest import ingest
    from runtime.settings import Settings

    base = Settings(_env_file=None)
    for field in ("shard_records", "upload_concurrency"):
        bad = base.model_copy(update={"ingest": base.ingest.model_copy(update={field: 0})})
        with pytest.raises(ValueError, match=f"ingest.{field} must be >= 1"):
            ingest(bad)
