"""The inference thread of a tier worker: one predict per micro-batch, the shared cascade decision, and the
forwarded rows' activations encoded, while the main thread does Kafka I/O (TensorFlow releases the GIL)."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime import codec


@dataclass
class Inference:
    """Per-row decisions of a micro-batch as Python lists (numpy scalar indexing per record costs more)."""

    labels: list[int]
    confidences: list[float]
    exits: list[int]
    confident: list[bool]
    forwards: list[bytes]  # encoded activations of the rows no exit answered, in row order
    seconds: float
    thresholds: list  # the thresholds in force this batch was decided with


@dataclass
class Staged:
    """A micro-batch whose inference runs (or ran) on the inference thread, not yet published."""

    batch: Any  # runtime.ledger.Batch
    requests: list  # runtime.validation.Request
    received: int
    inference: Future | None


class InferenceThread:
    def __init__(self, model: Any, *, is_last: bool, activation_dtype: str, name: str):
        self.model, self.is_last, self.activation_dtype = model, is_last, activation_dtype
        self.thresholds = model.thresholds  # in force: the calibrated list, or one adaptive exits put in its place
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}")

    def warm_up(self) -> None:
        """Trace the inference function now, so the first batch does not wait for it."""
        self.model.predict(np.zeros((1, *self.model.input_shape), dtype=self.model.input_dtype))

    def submit(self, samples: np.ndarray) -> Future:
        return self._executor.submit(self._infer, samples)

    def _infer(self, samples: np.ndarray) -> Inference:
        t0 = time.perf_counter()
        probs, activation = self.model.predict(samples)
        thresholds = self.thresholds
        decision = self.model.decide(probs, thresholds)
        confident = decision.answered | self.is_last
        forwards = [] if confident.all() else codec.encode_tensors(activation[~confident], dtype=self.activation_dtype)
        return Inference(decision.label.tolist(), decision.confidence.tolist(), decision.exit_id.tolist(),
                         confident.tolist(), forwards, time.perf_counter() - t0, thresholds)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
