"""The user's config dir and the JSON files of ``NAME: VALUE`` strings kept there.

``aliases.json`` (:mod:`contextbox.model_ids`) and ``keys.json`` (:mod:`contextbox.keystore`) are
both a JSON object of strings, written atomically. A *private* file (the keys) is created 0600 and
refused when others can read it, like ssh refuses a private key that others can read.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

from .errors import ConfigError, UsageError


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/contextbox`` (``~/.config/contextbox``): aliases and stored keys live here."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "contextbox"


def load_string_map(path: Path, what: str, value: str, private: bool = False) -> dict[str, str]:
    """The ``{name: value}`` strings of the JSON file ``path`` ({} when there is no file).

    ``what`` names the file in errors (``"the keys file"``), ``value`` what its values are
    (``"KEY"``). ``private``: refuse a file that its group or others can read. Every problem is a
    one-line :class:`ConfigError` that says what to do."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        f = open(fd, encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError as e:  # e.g. a folder by that name
        with contextlib.suppress(OSError):
            os.close(fd)
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None
    with f:
        mode = os.fstat(f.fileno()).st_mode
        if private and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{what} {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                              f"run: chmod 600 {path}")
        try:
            data = json.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{what} {path} is not valid JSON: {e}; fix or delete it") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"{what} {path} must hold a JSON object of NAME: {value} strings; fix or delete it")
    return data


def save_string_map(data: dict[str, str], path: Path, what: str, private: bool = False) -> Path:
    """Write ``data`` (sorted by name) to ``path`` atomically, its folder created 0700; a private
    file is created 0600 (else with the umask's mode). An OS error is a one-line :class:`UsageError`."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600 if private else 0o666)
        if private:
            os.fchmod(fd, 0o600)  # an old tmp file may have had other bits
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(data.items())), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        raise UsageError(f"cannot write {what} {path}: {e.strerror or e}") from None
    return path
