"""Cut a multi-exit model into per-tier sub-models along an ordered exit→tier map.

Tier ``t`` holding exits ``[a..b]`` maps the previous tier's activation (``cut_{a-1}``, or the raw
input for the first tier) to ``[probs of exit a, ..., probs of exit b, cut_b]``; the last tier has no
activation output. The sub-models share the full model's layers, so chaining them reproduces the full
model's exit outputs exactly (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ml.architectures import validate_multi_exit
from ml.flops import model_flops

TierMap = dict[str, list[int]]


@dataclass
class TierPart:
    """One tier's sub-model and what a worker needs to know about its shape and cost."""

    name: str
    exits: list[int]
    model: Any  # keras.Model
    input_shape: list[int]
    output_shape: list[int] | None  # activation shape for the next tier; None on the last tier
    flops: int


def default_tier_map(num_exits: int) -> TierMap:
    """edge=[exit 0], fog=[middle exits], cloud=[final]; fewer tiers for fewer exits."""
    if num_exits < 1:
        raise ValueError("a model needs at least one exit")
    if num_exits == 1:
        return {"cloud": [0]}
    if num_exits == 2:
        return {"edge": [0], "cloud": [1]}
    return {"edge": [0], "fog": list(range(1, num_exits - 1)), "cloud": [num_exits - 1]}


def parse_tier_map(text: str) -> TierMap:
    """Parse ``"edge=0;fog=1;cloud=2"`` (also ``,`` between tiers when each holds one exit, and
    ``fog=1+2``) into an ordered tier map; ``final`` names the last exit (resolved later). A trailing
    separator is allowed (``edge=0;fog=1;``), as the trigger form's pattern allows it."""
    text = text.strip().rstrip(";,").strip()
    if not text:
        raise ValueError("empty tier map; expected e.g. 'edge=0;fog=1;cloud=2'")
    sep = ";" if ";" in text else ","
    out: dict[str, list[Any]] = {}
    for part in text.split(sep):
        if "=" not in part:
            raise ValueError(f"bad tier map entry {part!r}; expected 'tier=exit[+exit...]', e.g. 'edge=0;cloud=1+2'")
        name, exits = (s.strip() for s in part.split("=", 1))
        if name in out:
            raise ValueError(f"tier {name!r} appears twice in the tier map")
        items = [e.strip() for e in exits.replace("+", " ").replace(",", " ").split()]
        out[name] = [int(e) if e.lstrip("-").isdigit() else e for e in items]
    return out


def normalize_tier_map(tier_map: Mapping[str, Sequence[int | str]] | str | None, num_exits: int) -> TierMap:
    """Validate an ordered tier map against a model with ``num_exits`` exits; return it with int exits.

    Rules: at least one tier; every tier has at least one exit; exits are known (0..num_exits-1, or
    ``"final"``/``"exit_i"``), each used once, ascending across tiers; the last tier holds the final exit.
    Exits not listed are simply not served.
    """
    if tier_map is None:
        return default_tier_map(num_exits)
    if isinstance(tier_map, str):
        tier_map = parse_tier_map(tier_map)
    if not tier_map:
        raise ValueError("the tier map is empty; give at least one tier, e.g. {'cloud': [final exit]}")
    final = num_exits - 1
    result: TierMap = {}
    seen: list[int] = []
    for name, exits in tier_map.items():
        if not isinstance(name, str) or not name or "-" in name or "." in name:
            raise ValueError(f"bad tier name {name!r}: use a non-empty name without '-' or '.' (used in topic names)")
        if isinstance(exits, int | str):
            exits = [exits]
        if len(exits) == 0:
            raise ValueError(f"tier {name!r} has no exit; every tier needs at least one exit")
        ids = []
        for e in exits:
            if isinstance(e, str):
                if e == "final":
                    e = final
                elif e.startswith("exit_") and e[5:].isdigit():
                    e = int(e[5:])
                else:
                    raise ValueError(f"unknown exit {e!r} in tier {name!r}; use 0..{final} or 'final'")
            if not isinstance(e, int) or isinstance(e, bool) or not 0 <= e <= final:
                raise ValueError(f"unknown exit {e!r} in tier {name!r}: this model has exits 0..{final}")
            if e in seen or e in ids:
                raise ValueError(f"exit {e} is assigned twice (tier {name!r}); each exit belongs to one tier")
            if (ids and e < ids[-1]) or (seen and e < seen[-1]):
                raise ValueError(f"tier map is not ordered: exit {e} in tier {name!r} comes after exit "
                                 f"{max(seen + ids)}; list tiers from edge to cloud with ascending exits")
            ids.append(e)
        seen.extend(ids)
        result[name] = ids
    last_name = list(result)[-1]
    if result[last_name][-1] != final:
        raise ValueError(f"the last tier ({last_name!r}) must hold the final exit {final}, it holds {result[last_name]}")
    return result


def partition(model, tier_map: Mapping[str, Sequence[int | str]] | str | None = None) -> list[TierPart]:
    """Split ``model`` into one sub-model per tier (see module docstring)."""
    import keras

    validate_multi_exit(model)
    n_exits = len(model.outputs)
    tmap = normalize_tier_map(tier_map, n_exits)
    names = list(tmap)
    parts: list[TierPart] = []
    src = model.inputs[0]
    for idx, name in enumerate(names):
        exits = tmap[name]
        is_last = idx == len(names) - 1
        outputs = [model.outputs[e] for e in exits]
        cut = None if is_last else model.get_layer(f"cut_{exits[-1]}").output
        if cut is not None:
            outputs.append(cut)
        try:
            sub = keras.Model(src, outputs, name=f"{model.name}_{name}")
        except Exception as err:  # Keras raises several types when the graph is not separable here
            raise ValueError(f"cannot cut model {model.name!r} for tier {name!r}: its exits {exits} are not "
                             f"computable from the previous cut alone ({err})") from err
        parts.append(TierPart(
            name=name,
            exits=exits,
            model=sub,
            input_shape=[int(d) for d in src.shape[1:]],
            output_shape=None if cut is None else [int(d) for d in cut.shape[1:]],
            flops=model_flops(sub),
        ))
        src = cut
    return parts


def compose(parts: Sequence[TierPart], x) -> list:
    """Run the tiers in sequence on ``x`` (no early exit) and return every served exit's probs."""
    import numpy as np

    outs: list = []
    h = x
    for part in parts:
        y = part.model(h, training=False)
        y = y if isinstance(y, list | tuple) else [y]
        y = [np.asarray(t) for t in y]
        if part.output_shape is None:
            outs.extend(y)
        else:
            outs.extend(y[:-1])
            h = y[-1]
    return outs


def full_network_flops(model) -> int:
    """FLOPs of the plain network to the final exit (no side branches): the cloud-only baseline."""
    import keras

    return model_flops(keras.Model(model.inputs[0], model.outputs[-1]))
