"""The simulator's ground truth for APP.feedback: by class name when the dataset has names, so a model that
numbers the classes otherwise gets the truth in its own ids."""

from runtime.client import SimReport


def report(rows):
    return SimReport(sent=len(rows), answered=sum("label" in r for r in rows), duplicates=0, correct=0,
                     per_tier={}, degraded=0, latency_ms=[], wall_s=1.0, request_bytes=0, rows=rows)


def test_feedback_maps_truth_names_onto_the_models_ids():
    rows = [{"request_id": "a", "truth": 0, "truth_name": "daisy", "label": 3, "class_name": "daisy"},
            {"request_id": "b", "truth": 1, "truth_name": "rose", "label": 3, "class_name": "daisy"},
            {"request_id": "c", "truth": 1, "truth_name": "rose", "label": 7, "class_name": "rose"},
            {"request_id": "d", "truth": 2, "truth_name": "tulip", "label": 7, "class_name": "rose"},
            {"request_id": "e", "truth": 0, "truth_name": "daisy"}]  # unanswered
    # "tulip" was never an answer: its id in the model is unknown, so no feedback for d
    assert report(rows).feedback() == {"a": 3, "b": 7, "c": 7}


def test_feedback_without_names_is_the_dataset_id():
    rows = [{"request_id": "a", "truth": 4, "label": 4}, {"request_id": "b", "truth": None, "label": 1}]
    assert report(rows).feedback() == {"a": 4}
