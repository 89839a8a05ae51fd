"""``rlm models``, ``rlm aliases`` and ``rlm keys``: which models can be used, short names, stored keys."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from .config import Config
from .errors import UsageError
from .providers.base import BUILTIN_PROVIDERS, ProviderConfig


def add_parsers(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``models``, ``aliases`` and ``keys`` to the ``rlm`` subparsers."""
    m = sub.add_parser("models", help="list usable model specs, and which have keys",
                       description="Model specs you can pass to -m/--model, whether each has its API key, "
                                   "your aliases and the bare-id table.")
    m.add_argument("--json", action="store_true", help="print one JSON object")

    a = sub.add_parser("aliases", help="short names for model specs (rlm aliases set fast openai/gpt-4.1-nano)")
    a_sub = a.add_subparsers(dest="aliases_command", metavar="ACTION", parser_class=parser_class)
    s = a_sub.add_parser("set", help="make NAME stand for SPEC in -m/--model")
    s.add_argument("name", metavar="NAME", help="the alias: letters, digits, '.', '_', '-'")
    s.add_argument("spec", metavar="SPEC", help="what it stands for: NAME/MODEL, a bare id, local, KIND:MODEL, …")
    a_sub.add_parser("list", help="every alias and what it resolves to")
    r = a_sub.add_parser("remove", help="forget an alias")
    r.add_argument("name", metavar="NAME", help="the alias to remove")

    k = sub.add_parser("keys", help="API keys kept in a file only you can read (the environment wins)")
    k_sub = k.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=parser_class)
    ks = k_sub.add_parser("set", help="store a key, read from the terminal (hidden) or stdin")
    ks.add_argument("name", metavar="NAME",
                    help="a provider (openai, anthropic, deepseek, …) or an environment variable name (MY_API_KEY)")
    k_sub.add_parser("list", help="which keys are set and where from (never the keys)")
    kr = k_sub.add_parser("remove", help="delete a stored key")
    kr.add_argument("name", metavar="NAME", help="a provider or an environment variable name")


# ---------------------------------------------------------------------- helpers
def _providers(config: Config) -> dict[str, ProviderConfig]:
    """Built-in endpoints, with configured ``[[providers]]`` tables replacing them (first of each name)."""
    out = dict(BUILTIN_PROVIDERS)
    seen: set[str] = set()
    for p in config.providers:
        if p.name not in seen:
            out[p.name] = p
            seen.add(p.name)
    return out


def key_source(env_name: str) -> str:
    """``environment``, ``key file`` or ``missing`` — never the key."""
    import os

    from .keystore import load_keys

    if os.environ.get(env_name):
        return "environment"
    return "key file" if load_keys().get(env_name) else "missing"


def _env_name(name: str, config: Config) -> str:
    from .keystore import ENV_NAME

    providers = _providers(config)
    if name in providers:
        env = providers[name].api_key_env
        if not env:
            raise UsageError(f"provider {name!r} takes no API key (it has no api_key_env)")
        return env
    if ENV_NAME.match(name):
        return name
    raise UsageError(f"unknown provider {name!r}; use one of {', '.join(sorted(providers))} or an environment "
                     f"variable name like MY_API_KEY")


def _read_secret(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline()


# ---------------------------------------------------------------------- commands
def cmd_models(args: argparse.Namespace) -> int:
    from . import model_ids
    from .providers.base import _entry_points, plugin_kinds

    config = Config.load(args.config)
    rows = []
    for name, p in sorted(_providers(config).items()):
        if p.kind == "local":
            continue
        if p.api_key_env:
            src = key_source(p.api_key_env)
            key = f"{p.api_key_env}: {src}" + (f" (rlm keys set {name})" if src == "missing" else "")
        else:
            key = "no key needed"
        rows.append({"spec": f"{name}/MODEL", "kind": p.kind, "endpoint": p.base_url, "key": key,
                     "usable": not p.api_key_env or src != "missing"})
    try:
        from .providers.local import local_available

        local_ok = local_available()
    except ImportError:
        local_ok = False
    rows.append({"spec": "local", "kind": "local", "endpoint": "embedded llama.cpp",
                 "key": "no key needed" if local_ok else "not installed: pip install 'contextbox[local]'",
                 "usable": local_ok})
    eps = _entry_points()
    for kind in plugin_kinds():
        dist = getattr(getattr(eps[kind], "dist", None), "name", None) or "?"
        rows.append({"spec": f"{kind}:MODEL", "kind": kind, "endpoint": f"plugin {dist}", "key": "-", "usable": True})
    rows.append({"spec": "scripted:PATH", "kind": "scripted", "endpoint": "replies from a JSON file",
                 "key": "no key needed", "usable": True})
    aliases = model_ids.load_aliases()
    table = [{"prefix": f"{pre}*", "provider": prov} for pre, prov in model_ids.BARE_ID_PREFIXES]
    if args.json:
        print(json.dumps({"specs": rows, "aliases": {a: {"spec": s, "resolves_to": model_ids.expand_spec(a, aliases)}
                                                     for a, s in aliases.items()},
                          "bare_ids": table, "default": config.model}, indent=2))
        return 0
    w = max(len(r["spec"]) for r in rows) + 2
    for r in rows:
        mark = "✓" if r["usable"] else "✗"
        print(f"{mark} {r['spec']:<{w}} {r['key']:<48} {r['endpoint'] or ''}")
    print(f"\ndefault model: {config.model or '(none: local when installed)'}")
    print("bare ids: " + "; ".join(f"{t['prefix']} → {t['provider']}/…" for t in table))
    if aliases:
        print("aliases:")
        for a in sorted(aliases):
            print(f"  {a} → {model_ids.expand_spec(a, aliases)}")
    return 0


def cmd_aliases(args: argparse.Namespace) -> int:
    from . import model_ids

    aliases = model_ids.load_aliases()
    if args.aliases_command == "set":
        model_ids.check_alias_name(args.name)
        spec = args.spec.strip()
        if not spec:
            raise UsageError("the alias needs a model spec")
        trial = {**aliases, args.name: spec}
        target = model_ids.expand_spec(args.name, trial)  # refuses a loop
        path = model_ids.save_aliases(trial)
        print(f"{args.name} → {target}" + (f" (via {spec})" if target != spec else "") + f"  [{path}]")
        return 0
    if args.aliases_command == "remove":
        if args.name not in aliases:
            raise UsageError(f"no alias {args.name!r}; see 'rlm aliases list'")
        del aliases[args.name]
        model_ids.save_aliases(aliases)
        print(f"removed {args.name}")
        return 0
    if not aliases:
        print(f"no aliases (add one: rlm aliases set NAME SPEC; file {model_ids.aliases_path()})")
    for a, s in sorted(aliases.items()):
        target = model_ids.expand_spec(a, aliases)
        print(f"{a} → {target}" + (f" (via {s})" if target != s else ""))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from .keystore import keys_path, load_keys, save_keys

    config = Config.load(args.config)
    if args.keys_command == "set":
        env = _env_name(args.name, config)
        key = _read_secret(f"{env}: ").strip()
        if not key:
            raise UsageError("no key given (type or pipe it in; it is never taken from the command line)")
        if any(c.isspace() for c in key):
            raise UsageError("the key holds whitespace; paste the key alone")
        keys = load_keys()
        keys[env] = key
        path = save_keys(keys)
        print(f"stored {env} in {path} (mode 600)")
        return 0
    if args.keys_command == "remove":
        env = _env_name(args.name, config)
        keys = load_keys()
        if env not in keys:
            raise UsageError(f"no stored key {env} in {keys_path()}")
        del keys[env]
        save_keys(keys)
        print(f"removed {env}")
        return 0
    stored = load_keys()
    envs = {p.api_key_env: name for name, p in sorted(_providers(config).items()) if p.api_key_env}
    for env in stored:
        envs.setdefault(env, "-")
    for env, name in sorted(envs.items()):
        print(f"{env:<24} {name:<12} {key_source(env)}")
    print(f"\nkey file: {keys_path()} (the environment wins over it)")
    return 0
