"""``local`` and ``local:PATH.gguf`` — a GGUF model run in-process by llama-cpp-python.

Plain ``local`` uses the embedded Qwen2.5-Coder-1.5B-Instruct (assembled on first use by
:func:`contextbox.local_model.ensure_model`); ``local:PATH.gguf`` uses that file.

One ``Llama`` object is kept per (model path, context size) per process and shared by
every provider that asks for it: loading costs seconds, and llama-cpp-python reuses the
longest matching prefix of the tokens it already evaluated, so a run whose history grows
call after call only pays for the new suffix. ``Llama`` is not thread-safe, so calls to
one model are serialised with a lock.

``response_schema`` is honoured by grammar-constrained decoding
(``response_format={"type": "json_object", "schema": ...}``): a small model then always
produces JSON of the required shape. Any root works: llama-cpp-python's converter takes an
array root with ``minItems``/``maxItems`` as is (typed ``llm_map`` relies on it).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ContextWindowError, ProviderError, UsageError
from ..types import Completion
from .base import ProviderConfig, register_kind

log = logging.getLogger("contextbox")

DEFAULT_CONTEXT_TOKENS = 16384
DEFAULT_MAX_TOKENS = 512
#: RAM for saved KV states (llama-cpp-python's LlamaRAMCache). Root and sub-calls of a run
#: share one model; without saved states every sub-call evicts the root's evaluated
#: history and the next root call re-reads all of it.
DEFAULT_STATE_CACHE_BYTES = 1 << 30
MISSING_EXTRA = (
    "the local model needs the 'local' extra: pip install 'contextbox[local]' (or configure a provider, see README)"
)


@dataclass
class _Loaded:
    """A loaded ``Llama`` and the lock that serialises its use."""

    llama: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    load_s: float = 0.0


_MODELS: dict[tuple[str, int], _Loaded] = {}
_MODELS_LOCK = threading.Lock()


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise UsageError(MISSING_EXTRA) from None
    return llama_cpp


def llama_available() -> bool:
    """True when llama-cpp-python can be imported (does not import it)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def local_available() -> bool:
    """True when ``local`` would work: llama-cpp-python installed and the model present.

    "Present" means assembled and verified in the cache, or all part packages installed.
    Cheap: imports nothing heavy and reads no model data.
    """
    from ..local_model import model_present

    return llama_available() and model_present()


def default_threads() -> int:
    """CPUs this process may run on (respects affinity / cgroup-pinned CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _state_cache(llama_cpp: Any, capacity_bytes: int) -> Any:
    """A ``LlamaRAMCache`` that stores one row of logits per saved state and counts it.

    Stock ``save_state`` copies ``n_batch`` rows of logits (512 × 151,936 floats ≈ 300 MB for
    Qwen) that ``cache_size`` does not count, so the cache would outgrow its capacity many
    times over. Only the last row can matter, and a restored state is re-decoded from its
    last token before sampling anyway.
    """

    class _CompactStateCache(llama_cpp.LlamaRAMCache):
        @property
        def cache_size(self) -> int:
            return sum(st.llama_state_size + st.scores.nbytes + st.input_ids.nbytes for st in self.cache_state.values())

        def __setitem__(self, key: Any, value: Any) -> None:
            if getattr(value, "scores", None) is not None and value.scores.shape[0] > 1:
                value.scores = value.scores[-1:].copy()
            super().__setitem__(key, value)

    return _CompactStateCache(capacity_bytes=capacity_bytes)


def load_model(
    path: str | Path,
    n_ctx: int = DEFAULT_CONTEXT_TOKENS,
    n_threads: int | None = None,
    state_cache_bytes: int = DEFAULT_STATE_CACHE_BYTES,
) -> _Loaded:
    """The process-wide ``Llama`` for ``path`` and ``n_ctx``, loading it on first use.

    ``state_cache_bytes`` > 0 attaches a ``LlamaRAMCache`` of that size: after each call the
    evaluated state is saved, and a later prompt that extends a saved one restores it
    instead of re-evaluating (only on first load; later callers share that choice).
    """
    key = (str(Path(path).resolve()), int(n_ctx))
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is not None:
            return loaded
        llama_cpp = _import_llama()
        threads = n_threads or default_threads()
        t0 = time.monotonic()
        try:
            llama = llama_cpp.Llama(
                model_path=key[0],
                n_ctx=key[1],
                n_threads=threads,
                n_threads_batch=threads,
                chat_format="chatml",
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise UsageError(f"cannot load the local model {key[0]}: {e}") from None
        load_s = time.monotonic() - t0
        if state_cache_bytes > 0:
            llama.set_cache(_state_cache(llama_cpp, int(state_cache_bytes)))
        log.info("loaded local model %s (n_ctx=%d, %d threads) in %.2fs", key[0], key[1], threads, load_s)
        loaded = _MODELS[key] = _Loaded(llama, load_s=load_s)
        return loaded


def unload_all() -> None:
    """Close and drop every cached model (tests; frees memory; runs at exit)."""
    with _MODELS_LOCK:
        for m in _MODELS.values():
            close = getattr(m.llama, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - best effort at shutdown
                    log.debug("closing a local model failed", exc_info=True)
        _MODELS.clear()


# llama.cpp frees its model in a finaliser that breaks during interpreter teardown; close first
atexit.register(unload_all)


class LocalProvider:
    """A provider backed by an in-process llama.cpp model."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        name: str = "local",
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        n_threads: int | None = None,
        state_cache_bytes: int = DEFAULT_STATE_CACHE_BYTES,
    ):
        _import_llama()  # fail early, in one line, when the extra is missing
        self.model_path = Path(model_path)
        self.name = name
        self.context_window: int | None = int(context_tokens)
        self.n_threads = n_threads
        self.state_cache_bytes = state_cache_bytes
        self._loaded: _Loaded | None = None

    @property
    def load_s(self) -> float | None:
        """Seconds the model took to load in this process (``None`` until loaded)."""
        return self._loaded.load_s if self._loaded else None

    def load(self) -> LocalProvider:
        """Load the model now (otherwise the first :meth:`complete` does)."""
        if self._loaded is None:
            self._loaded = load_model(
                self.model_path,
                self.context_window or DEFAULT_CONTEXT_TOKENS,
                self.n_threads,
                self.state_cache_bytes,
            )
        return self

    #: the engine passes ``response_schema`` (constrained decoding) to providers that say so
    supports_schema = True
    #: and ``choice_scores`` (a label chosen by the model's probabilities: providers/choice_scores.py)
    supports_choice_scores = True

    def can_score(self, choices: list[str]) -> bool:
        """Whether ``choice_scores`` works for these labels (no label's tokens begin another's)."""
        from .choice_scores import label_tokens, prompt_text

        self.load()
        assert self._loaded is not None
        llama = self._loaded.llama
        return label_tokens(llama, choices) is not None and prompt_text(llama, [{"role": "user", "content": ""}]) \
            is not None

    def _scored(self, messages: list[dict[str, Any]], spec: dict[str, Any]) -> Completion:
        """``choice_scores={"choices": [...], "prior": {...} | None, "raw": bool, "prompts": [...] | None}``:
        each of ``prompts`` (else the messages' last one) scored on its own, as a user message; the answer
        is a JSON array of the labels with the highest calibrated score, or (``raw``) of the scores."""
        import json

        from .choice_scores import label_logprobs, pick

        assert self._loaded is not None
        prompts = spec.get("prompts") or [messages[-1]["content"]]
        out: list[Any] = []
        n_in = 0
        with self._loaded.lock:
            for p in prompts:
                try:
                    scores, n = label_logprobs(self._loaded.llama, [{"role": "user", "content": p}],
                                               list(spec["choices"]))
                except (ValueError, RuntimeError) as e:
                    raise ProviderError(f"local model scoring failed: {e}") from None
                n_in += n
                out.append(scores if spec.get("raw") else pick(scores, spec.get("prior")))
        return Completion(text=json.dumps(out), input_tokens=n_in, output_tokens=len(out), model=self.name,
                          finish_reason="stop")

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
        self.load()
        assert self._loaded is not None
        if opts.get("choice_scores"):
            return self._scored(messages, opts["choice_scores"])
        kwargs: dict[str, Any] = {
            "messages": messages,
            "max_tokens": int(opts.get("max_tokens") or DEFAULT_MAX_TOKENS),
            "temperature": float(opts["temperature"]) if opts.get("temperature") is not None else 0.0,
        }
        if opts.get("stop"):
            kwargs["stop"] = list(opts["stop"])
        schema = opts.get("response_schema")
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": grammar_safe(schema)}
        t0 = time.monotonic()
        with self._loaded.lock:
            try:
                resp = self._loaded.llama.create_chat_completion(**kwargs)
            except ValueError as e:
                if "context window" in str(e):
                    raise ContextWindowError(
                        f"the prompt does not fit the local model's context window of {self.context_window} "
                        f"tokens ({e}); shorten the history or raise the context size"
                    ) from None
                raise ProviderError(f"local model call failed: {e}") from None
            except RuntimeError as e:
                raise ProviderError(f"local model call failed: {e}") from None
        choice = resp["choices"][0]
        usage = resp.get("usage") or {}
        out = Completion(
            text=choice["message"].get("content") or "",
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            model=self.name,
            finish_reason=choice.get("finish_reason"),
        )
        if schema is not None and out.finish_reason == "length":
            log.warning(
                "local model hit max_tokens=%d inside a schema-constrained reply; the JSON is cut off "
                "(bound string fields with maxLength or raise max_tokens)",
                kwargs["max_tokens"],
            )
        log.debug("local call: %d in, %d out, %.2fs", out.input_tokens, out.output_tokens, time.monotonic() - t0)
        return out


#: the longest string llama.cpp's grammar takes: ``maxLength`` becomes one nested optional per
#: character, and past ~1,500 levels its parser refuses the grammar and the process aborts
MAX_GRAMMAR_STRING = 1000


def grammar_safe(schema: Any) -> Any:
    """``schema`` with every string's ``maxLength`` at most :data:`MAX_GRAMMAR_STRING` (a copy;
    the caller's schema is unchanged). A longer answer must come from a variable (``final_var``)."""
    if isinstance(schema, dict):
        out = {k: grammar_safe(v) for k, v in schema.items()}
        if isinstance(out.get("maxLength"), int) and out["maxLength"] > MAX_GRAMMAR_STRING:
            out["maxLength"] = MAX_GRAMMAR_STRING
            if isinstance(out.get("minLength"), int):
                out["minLength"] = min(out["minLength"], MAX_GRAMMAR_STRING)
        return out
    if isinstance(schema, list):
        return [grammar_safe(v) for v in schema]
    return schema


def _factory(config: ProviderConfig, model: str) -> LocalProvider:
    """``local`` → the embedded model; ``local:PATH.gguf`` → that file."""
    extra = config.extra or {}
    ctx = int(config.context_window or extra.get("context_tokens") or extra.get("n_ctx") or DEFAULT_CONTEXT_TOKENS)
    threads = extra.get("n_threads")
    cache_bytes = int(extra.get("state_cache_bytes", DEFAULT_STATE_CACHE_BYTES))
    _import_llama()
    path = extra.get("path")
    if path:
        p = Path(str(path)).expanduser()
        if not p.is_file():
            raise UsageError(f"local model file not found: {path}")
        return LocalProvider(
            p, name=f"local:{path}", context_tokens=ctx, n_threads=threads, state_cache_bytes=cache_bytes
        )
    from ..local_model import ensure_model

    return LocalProvider(
        ensure_model(), name="local", context_tokens=ctx, n_threads=threads, state_cache_bytes=cache_bytes
    )


register_kind("local", _factory)
