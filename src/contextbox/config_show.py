"""``rlm config show``: the effective configuration as valid TOML, each value with where it
came from (``default``, the config file, or the environment variable that set it), secrets
masked. Unset values are comments, so the output loads back with ``tomllib``."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from .config import Config

#: environment variables Config.load reads, by (section, key)
ENV_KEYS = {(None, k): f"CONTEXTBOX_{k.upper()}" for k in ("model", "sub_model", "levels", "runs_dir")}
ENV_KEYS.update({("limits", k): f"CONTEXTBOX_{k.upper()}"
                 for k in ("max_iterations", "timeout_s", "max_total_tokens", "max_cost_usd")})
ENV_KEYS[("server", "token")] = "CONTEXTBOX_TOKEN"
#: what an unset value means, where it is not "nothing"
NOT_SET = {("limits", "max_cost_usd"): "not set: 5 USD when every model has a known price, else no limit",
           ("limits", "max_total_tokens"): "not set: no limit", ("code", "l3_memory_mb"): "not set: context size + 1 GiB",
           (None, "model"): "not set: the embedded local model when installed"}
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(v: Any) -> str:
    """One TOML value (strings as JSON strings, which TOML basic strings accept)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    return json.dumps(str(v), ensure_ascii=False)


def toml_key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def render(config: Config, env: Mapping[str, str] | None = None) -> str:
    """The config as TOML with an origin comment on each value."""
    env = os.environ if env is None else env
    d = config.to_dict(mask=True)
    default = Config().to_dict(mask=True)
    source = config.source

    def origin(section: str | None, key: str, value: Any) -> str:
        var = ENV_KEYS.get((section, key))
        if var and env.get(var):
            return f"env {var}"
        base = default.get(section, {}) if section else default
        if isinstance(base, dict) and key in base and base[key] == value:
            return "default"
        return f"file {source}" if source else "default"

    def line(section: str | None, key: str, value: Any) -> str:
        where = origin(section, key, value)
        if value is None:
            note = NOT_SET.get((section, key), "not set")
            return f"# {toml_key(key)} = ({note})  # {where}"
        return f"{toml_key(key)} = {toml_value(value)}  # {where}"

    out = [f"# effective config (file: {source or 'none'}; precedence: flags > env > file > default)"]
    sections = [k for k, v in d.items() if isinstance(v, dict)]
    for k, v in d.items():
        if k not in sections and k not in ("providers", "source"):
            out.append(line(None, k, v))
    for s in sections:
        out.append(f"\n[{s}]")
        for k, v in d[s].items():
            out.append(line(s, k, v))
    for p in d["providers"]:
        out.append("\n[[providers]]")
        for k, v in p.items():
            if v in (None, {}):
                continue
            out.append(f"{toml_key(k)} = {toml_value(v)}")
    return "\n".join(out) + "\n"
