"""The tiny bundle fixture is a real bundle: load every tier, run the cascade, compare with full.keras."""

import json

import numpy as np
import pytest

from ml.bundle import load_bundle, load_bundle_tier, load_tier, read_manifest


@pytest.fixture(scope="module")
def test_images():
    from ml.datasets import load_fashion_mnist

    return load_fashion_mnist("test").subset(300, seed=1)


def test_manifest_follows_contract(tiny_bundle):
    m = read_manifest(tiny_bundle)
    raw = json.loads((tiny_bundle / "manifest.json").read_text())
    assert raw["format"] == "tierflow.bundle/1"
    assert m.tier_names == ["edge", "fog", "cloud"]
    assert [t.exits for t in m.tiers] == [[0], [1], [2]]
    assert m.tiers[-1].output_shape is None and m.tiers[-1].thresholds == [None]
    assert m.tiers[0].output_shape == m.tiers[1].input_shape
    for t in m.tiers:
        assert (tiny_bundle / t.file).is_file()
    assert (tiny_bundle / "full.keras").is_file()
    assert m.next_tier("edge") == "fog" and m.next_tier("cloud") is None


def test_cascade_mixes_tiers_and_matches_full_model(tiny_bundle, test_images):
    tiers = load_bundle(tiny_bundle)
    full = load_tier(str(tiny_bundle), "full")
    x = test_images.x
    answered = {}
    h, rows = x, np.arange(len(x))
    for name, tier in tiers.items():
        probs, act = tier.predict(h)
        d = tier.decide(probs)
        answered[name] = int(d.answered.sum())
        if act is None:
            assert tier.is_last and tier.next_tier is None
            break
        assert act.shape[1:] == tuple(tier.output_shape)
        h, rows = act[d.forwarded], rows[d.forwarded]
    assert sum(answered.values()) == len(x)
    assert all(v > 0 for v in answered.values()), answered
    # with no early exit the chained tiers equal the full model exactly
    h = x
    for tier in tiers.values():
        probs, act = tier.predict(h)
        h = act
    (final_full,), _ = full.predict(x)
    np.testing.assert_allclose(probs[-1], final_full, atol=1e-5)


def test_predict_accepts_flat_or_unbatched_inputs(tiny_bundle, test_images):
    edge = load_bundle_tier(tiny_bundle, "edge")
    one = test_images.x[0]
    a, _ = edge.predict(one[..., 0])  # (28, 28) uint8
    b, _ = edge.predict(one.reshape(1, -1))  # (1, 784)
    np.testing.assert_allclose(a[0], b[0])
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 28, 28, 1\)"):
        edge.predict(np.zeros((2, 10)))


def test_bad_sources_are_clear_errors(tiny_bundle, tmp_path):
    with pytest.raises(KeyError, match="no tier 'mist'"):
        load_tier(tiny_bundle, "mist")
    with pytest.raises(FileNotFoundError, match="neither a bundle directory"):
        load_tier(tmp_path / "nope", "edge")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(ValueError, match="unsupported bundle format"):
        read_manifest(tmp_path)


def test_a_registry_uri_needs_an_explicit_tracking_uri_and_cache():
    """ml/ never falls back to tierflow's settings: the caller names the MLflow server and the cache."""
    with pytest.raises(ValueError, match="tracking URI and a cache directory"):
        load_tier("models:/fmnist-edge/1", "edge")
