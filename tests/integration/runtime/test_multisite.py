"""Each link on its own cluster: the edge site's broker carries requests and results, a second broker
(the fog/cloud site) carries the activations; the cascade still answers every request."""

from __future__ import annotations

import uuid

import pytest

from runtime.broker import EmbeddedBroker
from runtime.client import DeviceClient
from runtime.local import LocalDeployment
from runtime.settings import KafkaSettings, Settings

pytestmark = pytest.mark.integration


def test_links_on_separate_brokers(kafka_bootstrap, tiny_bundle, fmnist_test, tmp_path):
    from confluent_kafka.admin import AdminClient

    with EmbeddedBroker(log_path=tmp_path / "site2.log") as site2:
        settings = Settings(app=f"t{uuid.uuid4().hex[:10]}",
                            kafka=KafkaSettings(bootstrap=kafka_bootstrap,
                                                tier_bootstrap={"fog": site2.bootstrap, "cloud": site2.bootstrap}))
        x = fmnist_test[0][:150]
        with LocalDeployment(settings, tiny_bundle, tmp_path / "logs") as dep, DeviceClient(settings) as client:
            for i in range(len(x)):
                client.send(f"m{i}", x[i])
            assert client.wait_all(120), f"{client.outstanding()} unanswered"
            tiers = {a.result["tier"] for a in client.answers.values()}
            assert tiers == {"edge", "fog", "cloud"}, tiers
            assert all(w.ready() for w in dep.workers.values())
        links = {settings.link_topic("local", "edge", "fog"), settings.link_topic("local", "fog", "cloud")}
        site1_topics = set(AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics)
        site2_topics = set(AdminClient({"bootstrap.servers": site2.bootstrap}).list_topics(timeout=10).topics)
        assert links <= site2_topics and not links & site1_topics
        assert {settings.topic("requests"), settings.topic("results")} <= site1_topics
