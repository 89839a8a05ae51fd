"""The provider seam: one small protocol, a registry of kinds, and model-spec resolution.

A provider turns a list of chat messages into a :class:`~contextbox.types.Completion`::

    class Provider(Protocol):
        name: str                 # the model spec it serves, e.g. "openai/gpt-4o-mini"
        context_window: int | None
        def complete(self, messages: list[dict], **opts) -> Completion: ...

Recognised ``opts`` (a provider ignores what it cannot honour):
``max_tokens``, ``temperature``, ``timeout`` (seconds for this call), ``stop`` (list of str),
``response_schema`` (a JSON schema the reply must follow: constrained decoding where the
backend supports it; the reply text then is JSON of that shape, whatever the backend needs
on the wire), ``schema_name`` (a name for that schema, where the API wants one),
``on_retry`` (callback ``(attempt, delay_s, error) -> None``).
A provider that cannot constrain its output ignores ``response_schema``; callers that need
JSON also say so in the prompt and validate the reply.

Provider *kinds* (``openai``, ``anthropic``, ``local``, or a plugin's) are factories
``factory(config, model) -> Provider``. They are found through the entry point group
``contextbox.providers`` (:data:`ENTRY_POINT_GROUP`): the built-in kinds are declared there in
contextbox's own ``pyproject.toml`` exactly as a third-party package declares its kind, e.g.
``[project.entry-points."contextbox.providers"] echo = "contextbox_echo:EchoProvider"``; a plugin
kind is then used as ``echo:MODEL`` or from a ``[[providers]]`` table with ``kind = "echo"``.
:func:`register_kind` registers a factory in-process (tests, embedding code).
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import UsageError
from ..types import Completion

#: the entry point group provider kinds (built-in and third-party) are declared in
ENTRY_POINT_GROUP = "contextbox.providers"


@runtime_checkable
class Provider(Protocol):
    name: str
    context_window: int | None

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion: ...


@dataclass
class ProviderConfig:
    """One ``[[providers]]`` table of the config file (or a built-in default)."""

    name: str
    kind: str = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    role: str = "both"  # root | sub | both
    max_concurrency: int = 4
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None  # tokens per minute (held across runs when a limiter is installed)
    context_window: int | None = None
    max_retries: int = 3
    timeout_s: float = 120.0
    #: send ``response_schema`` to the API (OpenAI ``response_format`` json_schema, strict;
    #: Anthropic ``output_config``). Off: JSON is asked for in the prompt only.
    structured_output: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def api_key(self) -> str | None:
        """The key from the environment, else from the key file of ``rlm keys set``."""
        if not self.api_key_env:
            return None
        if os.environ.get(self.api_key_env):
            return os.environ[self.api_key_env]
        from ..keystore import stored_key

        return stored_key(self.api_key_env)


#: Endpoints that work without any config file. A ``[[providers]]`` table with the same
#: name replaces the built-in one.
BUILTIN_PROVIDERS: dict[str, ProviderConfig] = {
    p.name: p
    for p in [
        ProviderConfig("openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY", structured_output=True),
        ProviderConfig("deepseek", "openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
        ProviderConfig("openrouter", "openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        ProviderConfig("anthropic", "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
        ProviderConfig("ollama", "openai", "http://127.0.0.1:11434/v1", None),
        ProviderConfig("lmstudio", "openai", "http://127.0.0.1:1234/v1", None),
        ProviderConfig("vllm", "openai", "http://127.0.0.1:8000/v1", "VLLM_API_KEY"),
        ProviderConfig("llamacpp", "openai", "http://127.0.0.1:8080/v1", None),
    ]
}

Factory = Callable[[ProviderConfig, str], Provider]
_KINDS: dict[str, Factory] = {}
#: kinds whose module is imported on first use (keeps optional SDKs optional)
_LAZY_KINDS = {
    "openai": "contextbox.providers.openai_compat",
    "anthropic": "contextbox.providers.anthropic_provider",
    "local": "contextbox.providers.local",
}


def register_kind(kind: str, factory: Factory) -> None:
    """Register a provider kind. ``factory(config, model) -> Provider``."""
    _KINDS[kind] = factory


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    """``contextbox.providers`` entry points by name; contextbox's own win a name clash.
    Read once a process (scanning every installed package's metadata takes tens of ms)."""
    from importlib.metadata import entry_points

    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.value.startswith("contextbox."))
    return {ep.name: ep for ep in eps}


def plugin_kinds() -> list[str]:
    """Provider kinds declared through entry points that are not built in."""
    return sorted(set(_entry_points()) - set(_LAZY_KINDS))


def known_kinds() -> list[str]:
    return sorted(set(_KINDS) | set(_LAZY_KINDS) | set(_entry_points()))


def get_kind(kind: str) -> Factory:
    """The factory of ``kind``: registered in-process, else its ``contextbox.providers`` entry point
    (built-in kinds are declared there too), else a built-in module (a source tree run without install)."""
    if kind not in _KINDS:
        ep = _entry_points().get(kind)
        if ep is not None:
            try:
                factory = ep.load()
            except Exception as e:  # noqa: BLE001 - a broken plugin is the user's to fix, in one line
                dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
                raise UsageError(f"provider plugin {kind!r} ({ep.value}, package {dist}) failed to load: "
                                 f"{type(e).__name__}: {e}") from None
            if not callable(factory):
                raise UsageError(f"provider plugin {kind!r} ({ep.value}) is not a factory(config, model)")
            register_kind(kind, factory)
        elif kind in _LAZY_KINDS:  # the module registers itself on import
            importlib.import_module(_LAZY_KINDS[kind])
    if kind not in _KINDS:
        raise UsageError(f"unknown provider kind {kind!r}; use one of: {', '.join(known_kinds())}")
    return _KINDS[kind]


def _kind_spec(spec: str) -> tuple[str, str] | None:
    """``KIND:MODEL`` of a plugin kind (the colon before any slash), else None."""
    head, sep, rest = spec.partition(":")
    if not sep or "/" in head or not head:
        return None
    return head, rest


def resolve(spec: str, providers: list[ProviderConfig] | None = None, *,
            local: dict[str, Any] | None = None) -> Provider:
    """Turn a model spec into a provider.

    ``scripted:PATH`` · ``local`` · ``local:PATH.gguf`` · ``NAME/MODEL`` where NAME is a
    configured or built-in provider · ``KIND:MODEL`` of a plugin kind · a bare id or a user alias
    (:func:`contextbox.model_ids.expand_spec`). Several configured providers with one NAME form a pool.
    ``local`` holds settings for the local kind (``context_tokens``, ``n_threads``).
    """
    from ..model_ids import expand_spec

    spec = expand_spec(spec)
    if not spec:
        raise UsageError("empty model spec; pass --model NAME/MODEL, scripted:PATH or local")
    if spec.startswith("scripted:"):
        from .scripted import ScriptedProvider

        return ScriptedProvider.from_path(spec[len("scripted:") :])
    if spec == "local" or spec.startswith("local:"):
        path = spec[len("local:") :] if spec.startswith("local:") else None
        extra = {k: v for k, v in (local or {}).items() if v is not None}
        return get_kind("local")(ProviderConfig("local", "local", extra={**extra, "path": path}), spec)
    kind_spec = _kind_spec(spec)
    if kind_spec and kind_spec[0] in _entry_points() | _KINDS and kind_spec[0] not in _LAZY_KINDS:
        kind, model = kind_spec
        return get_kind(kind)(ProviderConfig(kind, kind), model)
    if "/" not in spec:
        plugins = plugin_kinds()
        raise UsageError(
            f"unknown model {spec!r}: use NAME/MODEL (e.g. openai/gpt-4o-mini), a bare id like gpt-4o-mini, "
            f"an alias (rlm aliases list), scripted:PATH or local"
            + (f", or a plugin's KIND:MODEL ({', '.join(plugins)})" if plugins else "")
        )
    name, model = spec.split("/", 1)
    configured = [p for p in (providers or []) if p.name == name]
    if not configured and name in BUILTIN_PROVIDERS:
        configured = [BUILTIN_PROVIDERS[name]]
    if not configured:
        known = sorted({p.name for p in providers or []} | set(BUILTIN_PROVIDERS))
        raise UsageError(
            f"unknown provider {name!r} in model {spec!r}; configure it in [[providers]] "
            f"or use one of: {', '.join(known)}"
        )
    if not model:
        raise UsageError(f"model spec {spec!r} names no model; use {name}/MODEL")
    from .limits import limited, shared_provider  # when a limiter is installed: limits and providers shared

    def build() -> Provider:
        members = [get_kind(p.kind)(p, model) for p in configured]
        if len(members) == 1:
            return limited(members[0], configured[0], 0)
        from .pool import Pool  # added by the delegation work; a pool routes across members

        pool = Pool(spec, members, configured)
        for i, ep in enumerate(pool.endpoints):
            ep.provider = limited(ep.provider, ep.config, i)
        return pool

    return shared_provider((spec, repr(configured)), build)


def estimate_tokens(text: str) -> int:
    """A rough token count (≈4 characters a token) for providers that report none."""
    return max(1, (len(text) + 3) // 4) if text else 0


#: the property that holds a non-object schema wrapped for APIs whose root must be an object
WRAP_KEY = "items"


def object_root(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``schema`` as an object-rooted schema (``{"items": schema}``) and whether it was wrapped.

    OpenAI's strict structured outputs want an object at the root; an array schema is
    wrapped and the reply unwrapped again with :func:`unwrap_reply`.
    """
    if schema.get("type") == "object":
        return schema, False
    wrapped = {"type": "object", "properties": {WRAP_KEY: schema}, "required": [WRAP_KEY],
               "additionalProperties": False}
    return wrapped, True


def unwrap_reply(text: str) -> str:
    """The JSON under :data:`WRAP_KEY` of a wrapped reply; other text unchanged."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict) and set(data) == {WRAP_KEY}:
        return json.dumps(data[WRAP_KEY], ensure_ascii=False)
    return text
