"""Model providers. See :mod:`contextbox.providers.base` for the contract."""

from .base import BUILTIN_PROVIDERS, Provider, ProviderConfig, estimate_tokens, register_kind, resolve
from .scripted import ScriptedProvider

__all__ = [
    "BUILTIN_PROVIDERS",
    "Provider",
    "ProviderConfig",
    "ScriptedProvider",
    "estimate_tokens",
    "register_kind",
    "resolve",
]
