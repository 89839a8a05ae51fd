"""API keys stored by ``rlm keys set``: a JSON file only its owner can read (0600).

Keys are kept under their environment variable's name (``OPENAI_API_KEY``); the environment
always wins over the file (see :meth:`contextbox.providers.base.ProviderConfig.api_key`).
A file that others can read is refused, like ssh refuses a private key that others can read.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .config_files import config_dir, load_string_map, save_string_map
from .errors import ConfigError

log = logging.getLogger("contextbox")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def keys_path() -> Path:
    return config_dir() / "keys.json"


def load_keys(path: Path | None = None) -> dict[str, str]:
    """The stored keys, by environment variable name ({} when there is no file)."""
    return load_string_map(path or keys_path(), "the keys file", "KEY", private=True)


def save_keys(keys: dict[str, str], path: Path | None = None) -> Path:
    """Write the keys file atomically, created 0600 (its folder 0700)."""
    return save_string_map(keys, path or keys_path(), "the keys file", private=True)


def stored_key(env_name: str) -> str | None:
    """The key stored for ``env_name``, or None (an unreadable file is logged, not fatal here)."""
    try:
        return load_keys().get(env_name) or None
    except ConfigError as e:
        log.warning("%s", e)
        return None
