"""What a model call costs, in USD — the one place that answers "price of spec".

Prices come from the maintained `genai-prices <https://pypi.org/project/genai-prices/>`_
package (its bundled snapshot, never fetched at run time), with ``[prices]`` in the config
winning::

    [prices]
    "work/my-model" = { input = 0.40, output = 1.60 }   # USD per million tokens, by spec
    "gpt-4o-mini" = { input = 0.15, output = 0.60 }      # or by model name

A model is looked up by the endpoint that serves it: ``NAME/MODEL`` takes the
``base_url`` of the ``[[providers]]`` table NAME (or the built-in one) and asks genai-prices
which provider that URL belongs to (``api.openai.com`` → OpenAI, ...). An endpoint no
provider claims (a private gateway, a local server, the test server) has **no known price**:
:func:`cost` returns ``None`` — never a made-up 0 — until ``[prices]`` gives one.
``local``, ``local:PATH`` and ``scripted[:PATH]`` models run on this machine: they cost 0.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("contextbox")

Overrides = dict[str, tuple[float, float]]


def is_free(spec: str) -> bool:
    """Models that run here (the embedded model, scripted replies) cost nothing."""
    return spec in ("local", "scripted") or spec.startswith(("local:", "scripted:"))


def _override(spec: str, overrides: Overrides | None) -> tuple[float, float] | None:
    if not overrides:
        return None
    if spec in overrides:
        return overrides[spec]
    model = spec.split("/", 1)[1] if "/" in spec else spec
    return overrides.get(model)


def _endpoints(spec: str, providers: Iterable[Any] | None) -> list[tuple[str | None, str | None]]:
    """``(kind, base_url)`` of every endpoint serving ``spec`` (a pool has several)."""
    from .providers.base import BUILTIN_PROVIDERS

    if "/" not in spec:
        return []
    name = spec.split("/", 1)[0]
    configured = [p for p in providers or () if getattr(p, "name", None) == name]
    if not configured and name in BUILTIN_PROVIDERS:
        configured = [BUILTIN_PROVIDERS[name]]
    return [(getattr(p, "kind", None), getattr(p, "base_url", None)) for p in configured]


@functools.lru_cache(maxsize=256)
def _genai_provider(kind: str | None, base_url: str | None) -> str | None:
    """The genai-prices provider id of an endpoint, or None when no provider claims it."""
    from genai_prices.data_snapshot import get_snapshot

    snap = get_snapshot()
    try:
        if base_url:
            return snap.find_provider(None, None, base_url).id
        if kind in ("openai", "anthropic"):  # the SDK's own default endpoint
            return snap.find_provider(None, kind, None).id
    except LookupError:
        pass
    return None


@functools.lru_cache(maxsize=4096)
def _genai_cost(provider_id: str, model: str, input_tokens: int, output_tokens: int) -> float | None:
    from genai_prices import Usage, calc_price

    try:
        calc = calc_price(Usage(input_tokens=input_tokens, output_tokens=output_tokens), model,
                          provider_id=provider_id)
    except LookupError:
        return None
    return float(calc.total_price)


def cost(spec: str, input_tokens: int, output_tokens: int, overrides: Overrides | None = None,
         providers: Iterable[Any] | None = None) -> float | None:
    """USD for a call of ``spec`` with these token counts; ``None`` when the price is unknown.

    ``overrides`` is ``[prices]`` (USD per million tokens, keyed by spec or model name);
    ``providers`` the configured ``[[providers]]`` tables (their ``base_url`` says whose
    prices apply). A pool whose endpoints price differently costs the dearest.
    """
    fixed = _override(spec, overrides)
    if fixed is not None:
        return (input_tokens * fixed[0] + output_tokens * fixed[1]) / 1_000_000
    if is_free(spec):
        return 0.0
    endpoints = _endpoints(spec, providers)
    if not endpoints:
        return None
    model = spec.split("/", 1)[1]
    worst = 0.0
    for kind, base_url in endpoints:
        pid = _genai_provider(kind, base_url)
        c = None if pid is None else _genai_cost(pid, model, max(0, int(input_tokens)), max(0, int(output_tokens)))
        if c is None:
            return None
        worst = max(worst, c)
    return worst


def has_price(spec: str, overrides: Overrides | None = None, providers: Iterable[Any] | None = None) -> bool:
    """Whether calls of ``spec`` have a known cost (free models do)."""
    return cost(spec, 1000, 1000, overrides, providers) is not None


def is_priced(spec: str, overrides: Overrides | None = None, providers: Iterable[Any] | None = None) -> bool:
    """Whether calls of ``spec`` cost money and we know how much."""
    c = cost(spec, 1000, 1000, overrides, providers)
    return c is not None and c > 0


def format_cost(usd: float | None, digits: int = 4) -> str:
    """``$0.0123``, or ``unknown`` for a cost that cannot be known."""
    return "unknown" if usd is None else f"${usd:.{digits}f}"
