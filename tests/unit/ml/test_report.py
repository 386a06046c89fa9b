from ml.report import check, format_summary, machine


def _report(final=0.925, acc=0.918, edge=0.82, compute=0.25, seconds=200.0):
    return {"train_seconds": seconds, "epochs_run": 5, "test": {
        "n": 10000, "final_exit_accuracy": final, "accuracy": acc, "measure": "max_softmax",
        "thresholds": [0.9, 0.8, None], "tier_fractions": {"edge": edge, "fog": 0.3, "cloud": 0.1},
        "relative_compute": compute, "mean_flops": 4e6, "full_flops": 15e6,
        "bytes_per_request": {"device-edge": 784.0}, "cloud_only": {"bytes_per_request": {"device-cloud": 784.0}}}}


def test_checks_follow_the_report_targets():
    ok = check(_report())
    assert all(c["ok"] for c in ok.values())
    bad = check(_report(final=0.915, acc=0.90, edge=0.79, compute=0.31, seconds=301))
    assert not any(c["ok"] for c in bad.values())
    # exactly 1.0 point below the final exit still meets "final - 1.0 pt"
    assert check(_report(final=0.93, acc=0.92))["overall accuracy >= final - 1.0 pt"]["ok"]


def test_summary_text_names_machine_and_ratio():
    r = _report()
    text = format_summary({"machine": machine(), "checks": check(r), "test": r["test"], "train_seconds": 200.0,
                           "epochs_run": 5, "report": "x/report.json", "plots": ["x/a.png"]})
    assert "CPUs" in text and "4.00x less compute" in text and text.count("[PASS]") == 5
