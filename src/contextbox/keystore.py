"""API keys stored by ``rlm keys set``: a JSON file only its owner can read (0600).

Keys are kept under their environment variable's name (``OPENAI_API_KEY``); the environment
always wins over the file (see :meth:`contextbox.providers.base.ProviderConfig.api_key`).
A file that others can read is refused, like ssh refuses a private key that others can read.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from pathlib import Path

from .errors import ConfigError, UsageError
from .model_ids import config_dir

log = logging.getLogger("contextbox")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def keys_path() -> Path:
    return config_dir() / "keys.json"


def load_keys(path: Path | None = None) -> dict[str, str]:
    """The stored keys, by environment variable name ({} when there is no file)."""
    p = path or keys_path()
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read the keys file {p}: {e.strerror or e}") from None
    with open(fd, encoding="utf-8") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"the keys file {p} is readable by others (mode {stat.S_IMODE(mode):o}); "
                              f"run: chmod 600 {p}")
        try:
            data = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"the keys file {p} is not valid JSON: {e}; fix or delete it") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"the keys file {p} must hold a JSON object of NAME: KEY strings; fix or delete it")
    return data


def save_keys(keys: dict[str, str], path: Path | None = None) -> Path:
    """Write the keys file atomically, created 0600 (its folder 0700)."""
    p = path or keys_path()
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # an old tmp file may have had other bits
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(keys.items())), f, indent=2)
            f.write("\n")
        os.replace(tmp, p)
    except OSError as e:
        raise UsageError(f"cannot write the keys file {p}: {e.strerror or e}") from None
    return p


def stored_key(env_name: str) -> str | None:
    """The key stored for ``env_name``, or None (an unreadable file is logged, not fatal here)."""
    try:
        return load_keys().get(env_name) or None
    except ConfigError as e:
        log.warning("%s", e)
        return None
