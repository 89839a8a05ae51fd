"""Model prices in USD per million tokens (input, output). Overridable with ``[prices]`` in config.

The table is small and dated; a model that is not listed costs 0 and is reported as such.
"""

from __future__ import annotations

PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o4-mini": (1.10, 4.40),
    "deepseek-chat": (0.27, 1.10),
    "deepseek-reasoner": (0.55, 2.19),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4": (1.00, 5.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
}


def price_for(spec: str, overrides: dict[str, tuple[float, float]] | None = None) -> tuple[float, float]:
    """Price of a model spec: exact spec in overrides, else the longest known prefix of the model name."""
    overrides = overrides or {}
    if spec in overrides:
        return overrides[spec]
    model = spec.split("/", 1)[1] if "/" in spec else spec
    if model in overrides:
        return overrides[model]
    table = {**PRICES, **overrides}
    best = max((k for k in table if model.startswith(k)), key=len, default=None)
    return table[best] if best else (0.0, 0.0)


def cost(spec: str, input_tokens: int, output_tokens: int,
         overrides: dict[str, tuple[float, float]] | None = None) -> float:
    pin, pout = price_for(spec, overrides)
    return (input_tokens * pin + output_tokens * pout) / 1_000_000
