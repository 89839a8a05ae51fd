"""Model ids the way people type them: bare ids (``gpt-4o-mini``) and user aliases.

A model spec is ``NAME/MODEL``, ``KIND:ARG`` (``scripted:PATH``, ``local:PATH.gguf``, a plugin's
``echo:…``) or ``local``. :func:`expand_spec` turns what a user typed into one of those:

1. a user alias (``rlm aliases set fast openai/gpt-4.1-nano``, kept in ``aliases.json`` in the
   config dir) is replaced by its target (an alias may name another alias or a bare id);
2. a bare id is given its provider by :data:`BARE_ID_PREFIXES` (``gpt-4o-mini`` → ``openai/gpt-4o-mini``);
3. anything else is returned unchanged (and :func:`contextbox.providers.base.resolve` judges it).
"""

from __future__ import annotations

import re
from pathlib import Path

from .config_files import config_dir, load_string_map, save_string_map
from .errors import UsageError

#: bare model id prefix → built-in provider; the first matching prefix wins (README "Model ids")
BARE_ID_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude-", "anthropic"),
    ("deepseek-", "deepseek"),
)

#: an alias name: letters, digits, ``.``, ``_`` and ``-`` (no ``/`` or ``:``, which specs use)
ALIAS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: names an alias may not take: they already mean something as a spec
RESERVED = frozenset({"local", "scripted"})
_MAX_HOPS = 8


def aliases_path() -> Path:
    return config_dir() / "aliases.json"


def bare_provider(model_id: str) -> str | None:
    """The provider a bare id belongs to by :data:`BARE_ID_PREFIXES`, or None."""
    low = model_id.lower()
    for prefix, provider in BARE_ID_PREFIXES:
        if low.startswith(prefix):
            return provider
    return None


def is_full_spec(spec: str) -> bool:
    return spec == "local" or "/" in spec or ":" in spec


def load_aliases(path: Path | None = None) -> dict[str, str]:
    """The user's aliases (an empty dict when there is no file)."""
    return load_string_map(path or aliases_path(), "the aliases file", "SPEC")


def save_aliases(aliases: dict[str, str], path: Path | None = None) -> Path:
    """Write the aliases file atomically (its folder 0700)."""
    return save_string_map(aliases, path or aliases_path(), "the aliases file")


def check_alias_name(name: str) -> None:
    if not ALIAS_NAME.match(name):
        raise UsageError(f"bad alias name {name!r}: use letters, digits, '.', '_' and '-' (no '/' or ':')")
    if name in RESERVED:
        raise UsageError(f"{name!r} is a model spec already; choose another alias name")


def expand_spec(spec: str, aliases: dict[str, str] | None = None) -> str:
    """What ``spec`` means: aliases followed, bare ids given their provider."""
    spec = (spec or "").strip()
    table = load_aliases() if aliases is None else aliases
    seen: list[str] = []
    while spec in table and not is_full_spec(spec):
        if spec in seen or len(seen) >= _MAX_HOPS:
            raise UsageError(f"alias loop: {' → '.join(seen + [spec])}; fix it with 'rlm aliases set'")
        seen.append(spec)
        spec = table[spec].strip()
    if is_full_spec(spec) or not spec:
        return spec
    provider = bare_provider(spec)
    return f"{provider}/{spec}" if provider else spec


def describe_table() -> list[tuple[str, str]]:
    """(pattern, example spec) rows of the bare-id table, for ``rlm models``."""
    return [(f"{prefix}*", f"{provider}/{prefix}…") for prefix, provider in BARE_ID_PREFIXES]
