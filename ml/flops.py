"""Analytic FLOP counts of Keras layers (multiply-add = 2 FLOPs), for compute-cost estimates."""

from __future__ import annotations

import math


def _size(shape) -> int:
    return int(math.prod(int(d) for d in shape[1:] if d is not None))


def layer_flops(layer) -> int:
    """FLOPs of one call of ``layer`` on one sample (0 for shape-only layers)."""
    kind = type(layer).__name__
    try:
        out = layer.output.shape
        inp = layer.input.shape
    except (AttributeError, ValueError):
        return 0
    if kind in ("InputLayer", "Flatten", "Reshape", "Dropout", "SpatialDropout2D"):
        return 0
    if kind in ("Conv1D", "Conv2D", "Conv3D"):
        kernel = layer.kernel.shape  # (*k, cin, cout)
        per_out = 2 * int(math.prod(kernel[:-1]))
        return _size(out) * per_out + (_size(out) if layer.use_bias else 0)
    if kind in ("DepthwiseConv2D",):
        kernel = layer.kernel.shape
        return _size(out) * 2 * int(math.prod(kernel[:2]))
    if kind == "Dense":
        return 2 * _size(inp) * _size(out) // max(1, _size(inp) // int(inp[-1])) + _size(out)
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        return _size(out) * int(math.prod(layer.pool_size))
    if kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        return _size(inp)
    if kind == "BatchNormalization":
        return 2 * _size(out)
    return _size(out)  # activations, rescaling, add, ...: one op per output element


def model_flops(model) -> int:
    """Sum of per-sample FLOPs over the layers of a (sub-)model."""
    return int(sum(layer_flops(layer) for layer in model.layers))
