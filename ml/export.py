"""TFLite export of the edge tier (float and full-integer int8), for phones and microcontrollers.

TensorFlow 2.21 still ships ``tf.lite.TFLiteConverter``; the interpreter moved to LiteRT
(``ai_edge_litert``), which we use when installed and otherwise fall back to ``tf.lite.Interpreter``.
The int8 model takes int8 inputs and returns int8 outputs; the quantisation (scale, zero point) of each
is in the model file (``input_details``), as microcontroller runtimes expect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _converter(model):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model)


def to_tflite_float(model) -> bytes:
    return _converter(model).convert()


def to_tflite_int8(model, representative: np.ndarray, samples: int = 200) -> bytes:
    """Full-integer quantisation calibrated on ``representative`` inputs (raw values, like serving)."""
    import tensorflow as tf

    rep = np.asarray(representative, dtype=np.float32)
    if rep.ndim != len(model.inputs[0].shape) or rep.shape[0] == 0:
        raise ValueError(f"representative data must be a non-empty batch shaped like the input "
                         f"{tuple(model.inputs[0].shape)}, got {rep.shape}")
    rep = rep[:samples]

    def gen():
        for i in range(rep.shape[0]):
            yield [rep[i:i + 1]]

    conv = _converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def export_tflite(model, out_dir: str | Path, tier: str, representative: np.ndarray | None) -> dict[str, str]:
    """Write ``<tier>.float.tflite`` (and ``<tier>.int8.tflite`` given representative data)."""
    out = Path(out_dir)
    files = {"float": f"{tier}.float.tflite"}
    (out / files["float"]).write_bytes(to_tflite_float(model))
    if representative is not None:
        files["int8"] = f"{tier}.int8.tflite"
        (out / files["int8"]).write_bytes(to_tflite_int8(model, representative))
    return files


def _interpreter(content: bytes):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(model_content=content)
    return Interpreter(model_content=content)


def run_tflite(content: bytes, x: np.ndarray) -> list[np.ndarray]:
    """Run a TFLite model exported above on a batch; outputs in the Keras model's order, dequantised."""
    it = _interpreter(content)
    runner = it.get_signature_runner()
    in_name = next(iter(runner.get_input_details()))
    in_det = runner.get_input_details()[in_name]
    out_det = runner.get_output_details()
    x = np.asarray(x, dtype=np.float32)
    if in_det["dtype"] != np.float32:
        scale, zero = in_det["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(in_det["dtype"])
    outs: dict[str, list[np.ndarray]] = {name: [] for name in out_det}
    for i in range(x.shape[0]):  # the exported signature has batch size 1
        res = runner(**{in_name: x[i:i + 1]})
        for name, val in res.items():
            det = out_det[name]
            if det["dtype"] != np.float32:
                scale, zero = det["quantization"]
                val = (val.astype(np.float32) - zero) * scale
            outs[name].append(val)
    names = sorted(outs, key=lambda n: int(n.rsplit("_", 1)[-1]) if n.rsplit("_", 1)[-1].isdigit() else n)
    return [np.concatenate(outs[n]) for n in names]
