"""Layer lists in settings ("9,10", "4,5", "-1"): parsed once, with one error message shape."""

from __future__ import annotations


def parse_layers(text: str, num_layers: int, env: str) -> list[int]:
    """Sorted distinct layer indices from "9,10" or "-2,-1" (negative counts from the end);
    ValueError naming ``env`` and the fix otherwise."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            layer = int(part)
        except ValueError:
            raise ValueError(f"{env}={text!r}: {part!r} is not a layer index; use e.g. {env}=4,5") from None
        resolved = layer + num_layers if layer < 0 else layer
        if not 0 <= resolved < num_layers:
            raise ValueError(f"{env}={text!r}: layer {layer} does not exist with NUM_LAYERS={num_layers}; "
                             f"use indices 0..{num_layers - 1} (or -1 for the last)")
        if resolved not in out:
            out.append(resolved)
    if not out:
        raise ValueError(f"{env}={text!r} names no layer: use e.g. {env}=4,5")
    return sorted(out)
