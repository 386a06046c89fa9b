"""MLflow pyfunc wrapper of one registered tier (models-from-code file, copied into each model version).

`mlflow.pyfunc.load_model("models:/APP-edge/3").predict(batch)` runs the tier and its exit decision, so
a registered tier is usable by any MLflow tooling; tierflow's own workers skip this wrapper and load
the bundle directly (ml.registry.load_registered_tier). Needs tierflow installed where it is loaded.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class TierPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        from ml.bundle import load_bundle_tier, read_manifest

        path = context.artifacts["bundle"]
        self.tier = load_bundle_tier(path, read_manifest(path).metadata["registered"]["tier"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - untyped: no signature inference
        """Batch in -> per-row decision (answered, exit id, label, confidence), exit probs, activation."""
        import numpy as np

        probs, activation = self.tier.predict(np.asarray(model_input))
        d = self.tier.decide(probs)
        out = {"answered": d.answered, "exit_id": d.exit_id, "label": d.label, "confidence": d.confidence}
        out.update({f"probs_exit{e}": p for e, p in zip(self.tier.exit_ids, probs, strict=True)})
        if activation is not None:
            out["activation"] = activation
        return out


mlflow.models.set_model(TierPyfunc())
