"""The names every layer shares (data-plane and registry contract), each defined once.

ml/ is the bottom layer, so runtime/, plugins/, dags/ and infra/ import these from here.
"""

from __future__ import annotations

TIERS = ("edge", "fog", "cloud")  # the known tiers, upstream (first to receive a request) to downstream
FULL = "full"  # the unpartitioned network, served alone (cloud-only); never a tier of a tier map
CLOUD_ONLY = (FULL,)

# Registry aliases: `candidate` at registration, `champion` after a healthy rollout.
CANDIDATE = "candidate"
CHAMPION = "champion"

# Canary traffic of a rollout: its request ids start with this and its requests carry the header
# TRAFFIC_HEADER = CANARY, so the monitor keeps it out of live accuracy and exit-rate drift (it never gets
# feedback, and its answers say how a release behaves on test images, not on live traffic).
CANARY = "canary"
CANARY_ID_PREFIX = f"{CANARY}-"
TRAFFIC_HEADER = "tf-traffic"

# Topic kinds of one application APP: APP.<kind>.
TOPIC_KINDS = ("requests", "results", "replies", "dlq", "training", "feedback")


def model_name(app: str, tier: str) -> str:
    """Registered model of one tier (or of the full model): ``APP-edge`` ... ``APP-full``."""
    return f"{app}-{tier}"


def topic(app: str, kind: str) -> str:
    """Topic of the data-plane contract: requests, results, replies (upper tiers' answers to the entry tier),
    dlq, training, feedback."""
    return f"{app}.{kind}"


def link_topic(app: str, version: str | int, src: str, dst: str) -> str:
    """Activations from tier ``src`` to tier ``dst`` of one model version."""
    return f"{app}.v{version}.{src}-{dst}"


def entry_group(app: str) -> str:
    """Consumer group of the first tier on ``APP.requests``: shared by every version (and by ``full``),
    so a rollout hands requests over without replay or gaps."""
    return f"{app}.{TIERS[0]}"


def link_group(app: str, version: str | int, tier: str) -> str:
    """Consumer group of a downstream tier of one model version on its link topic."""
    return f"{app}.v{version}.{tier}"
