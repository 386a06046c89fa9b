"""The default-model benchmark: default compact model on Fashion-MNIST trained within
the time budget on this machine, calibrated at 1.0 point tolerance, partitioned, evaluated on the test
set; prints the figures, the pass/fail of each target, the compute ratio against the cloud-only
baseline measured in the same run, and the machine. Same as ``tierflow ml report``.

Run: ``.venv/bin/python tests/bench/bench_ml_report.py [out_dir]`` (takes ~5-6 minutes on 2 cores).
"""

from __future__ import annotations

import sys
import tempfile

import pytest


def main(out_dir: str | None = None) -> dict:
    from ml.report import format_summary, run_report

    summary = run_report(out_dir or tempfile.mkdtemp(prefix="tierflow-report-"))
    print(format_summary(summary))
    return summary


@pytest.mark.bench
def test_bench_report(tmp_path):
    summary = main(str(tmp_path))
    assert summary["test"]["n"] == 10000


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
