"""The orchestrator environment never imports TensorFlow: the light ml modules must not pull it in."""

import subprocess
import sys


def test_light_modules_do_not_import_tensorflow():
    code = ("import sys\n"
            "import ml.partition, ml.shards, ml.datasets, ml.cascade, ml.confidence, ml.bundle, ml.calibration, "
            "ml.evaluation, ml.costs, ml.pipeline, ml.cli, ml.tiny, ml.report, ml.registry, ml.registry_rest, "
            "ml.sources, ml.contract\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'mlflow', 'confluent_kafka', 'airflow') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported at module level: {out.stdout}"
