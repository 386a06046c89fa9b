"""The shared names: what the README's data-plane contract lists, built in one place."""

from ml import contract


def test_names_of_the_data_plane_contract():
    assert contract.TIERS == ("edge", "fog", "cloud") and contract.FULL not in contract.TIERS
    assert contract.model_name("fm", "edge") == "fm-edge" and contract.model_name("fm", contract.FULL) == "fm-full"
    assert [contract.topic("fm", k) for k in contract.TOPIC_KINDS] == [
        "fm.requests", "fm.results", "fm.replies", "fm.dlq", "fm.training", "fm.feedback"]
    assert contract.link_topic("fm", 3, "edge", "fog") == "fm.v3.edge-fog"
    assert contract.entry_group("fm") == "fm.edge" and contract.link_group("fm", 3, "fog") == "fm.v3.fog"
