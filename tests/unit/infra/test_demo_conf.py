"""The demo's champion is trained with the pipeline's own defaults, so a later run with the defaults on the same
data meets it on equal terms at the gate."""

from infra.local.demo import pipeline_conf
from plugins.pipeline.params import validate


def test_the_demo_run_differs_from_a_run_with_the_defaults_only_in_the_dataset_it_names():
    uri = "s3://tierflow/datasets/fmnist/versions/v1/manifest.json"
    assert pipeline_conf(uri) == {"dataset": uri}
    assert validate(pipeline_conf(uri)).to_dict() == {**validate({}).to_dict(), "dataset": uri}
    assert pipeline_conf(uri, epochs=3, canary_requests=50) == {"dataset": uri, "epochs": 3, "canary_requests": 50}
