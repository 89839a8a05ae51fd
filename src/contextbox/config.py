"""Configuration: TOML file < environment < flags.

The file is ``--config PATH``, else ``$CONTEXTBOX_CONFIG``, else ``./contextbox.toml``, else
``$XDG_CONFIG_HOME/contextbox/config.toml``. Every key in the file is used; an unknown key
is an error, so a typo never silently does nothing. See README "Config reference".
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError, UsageError
from .executors import parse_levels
from .providers.base import ProviderConfig
from .types import Limits


def _xdg(var: str, default: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / default)


#: levels when none are configured: the embedded model gets the table ops and the typed map
#: (itself as sub-model), so aggregation questions work out of the box; API models get L1
#: (sub-calls cost money: allow them with --levels l1,l4).
LOCAL_DEFAULT_LEVELS = ("l1", "l4")
API_DEFAULT_LEVELS = ("l1",)


def default_levels(local: bool) -> tuple[str, ...]:
    return LOCAL_DEFAULT_LEVELS if local else API_DEFAULT_LEVELS


def default_runs_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "contextbox" / "runs"


@dataclass
class Aids:
    """Small-model aids (see README). ``grounding = "auto"`` means on for local models."""

    repetition: bool = True
    zero_hits: bool = True
    too_many_hits: int = 50  # hint when a search has more hits than this; 0 = off
    grounding: bool | str = "auto"
    first_turn: bool = True
    stall_turns: int = 3  # turns without a new action before the model must answer; 0 = off
    hit_turns: int = 2  # a search whose hit 1 holds the question: answer within this many turns; 0 = off
    cut_answer: bool = True  # an answer ending inside a longer token of the text is sent back once
    capped_count: bool = True  # a count answered from a capped hit list is told the exact total
    verify_restated: bool = True  # an answer that only restates a found sentence gets one check turn
    list_length: bool = True  # a list answer much longer than the "top N" asked is sent back once
    table_route: bool = True  # count/rank questions over structured lines: constrained turns build tables
    column_choice: bool = True  # the table route names the column the question is about (column_hints)
    pairs_route: bool = True  # pairs questions: label → filter → pairs → final_var, pair lists checked (pairs_hints)
    compact: bool = True  # compact old turns before the history outgrows the root model's window
    ranked_fallback: bool = True  # a find of several words with no hit shows the closest passages
    code_search: bool = True  # "which function ..." over source files: searches rank paragraphs (definitions)
    linked_passages: bool = False  # under a search's hits: passages sharing hit 1's rare words (2nd hop); off: the model searched the linked word
    question_search: bool = True  # a question's first ranked search uses all of its words (not a 2-word guess)
    case_route: bool = True  # "who killed ...?" over a case file: suspects -> examine (L4) -> weigh -> final


@dataclass
class CodeSettings:
    max_output_chars: int = 20000
    l2_memory_mb: int = 512
    l2_time_limit_s: float = 30.0
    l3_memory_mb: int | None = None  # default: context size + 1 GiB
    l3_time_limit_s: float = 60.0


@dataclass
class LocalSettings:
    context_tokens: int = 16384
    max_tokens: int = 384
    model_path: str | None = None
    threads: int | None = None
    max_output_chars: int = 3000  # L1 output cap for local runs (small window)


@dataclass
class ServerSettings:
    """``rlm serve`` (see README "Server"). ``roots``: folders whose files ``context_path`` may name."""

    host: str = "127.0.0.1"
    port: int = 8765  # not 8080: llama.cpp's server (the built-in llamacpp provider) listens there
    token: str | None = None  # require "Authorization: Bearer TOKEN" on every endpoint but /health
    roots: list[str] = field(default_factory=list)
    max_upload_mb: float = 64.0
    max_concurrent_runs: int = 4
    max_queued_runs: int = 1000  # runs beyond max_concurrent_runs wait in a queue (kept in the store); 0 = none
    db: str | None = None  # the SQLite run store; default <runs_dir>/runs.sqlite
    allowed_hosts: list[str] = field(default_factory=list)  # Host names served besides localhost/127.0.0.1/[::1]


@dataclass
class DelegationSettings:
    """L4 delegation (see README "Delegation"): sub-calls, batches and child RLMs."""

    max_depth: int = 2  # rlm_query at this depth degrades to a plain sub-model call
    max_concurrency: int = 16  # concurrent sub-calls (and child runs) per batch
    max_sub_calls: int | None = 1000  # per run, children included; "none" = unlimited
    chunk_size: int = 20000  # llm_map's default chunk size in characters
    engine: str = "local"  # "ray": sub-model calls of batches and maps run on Ray workers (contextbox[ray])
    #: a typed map with choices on a sub-model that can score labels (the local model): each record's
    #: label by the model's calibrated probabilities, one record a call (providers/choice_scores.py)
    choice_scoring: bool = True
    #: how much of the content-free prior a scored label divides out: 0 = raw probabilities, 1 = the whole
    #: prior (Zhao et al.); 0.5 beat both on TREC and oolong-pairs records (bench/bench_calibration.py)
    calibration: float = 0.5


@dataclass
class ContextSettings:
    """How much one ``-c DIR`` (or URL) may load before it is refused (see README "Contexts")."""

    max_files: int | None = 10_000  # files of one directory walk; "none" = no limit
    max_mb: float | None = 256.0  # megabytes of one directory walk or one URL; "none" = no limit

    def load_kwargs(self) -> dict[str, int | None]:
        """The ``max_files``/``max_bytes`` arguments of :meth:`contextbox.context.Context.load`."""
        return {"max_files": self.max_files,
                "max_bytes": None if self.max_mb is None else int(self.max_mb * 1024 * 1024)}


@dataclass
class Config:
    model: str | None = None
    sub_model: str | None = None
    levels: tuple[str, ...] | None = None  # None: chosen per model (see default_levels)
    system: str | None = None  # extra instructions appended to the root model's system prompt
    runs_dir: Path = field(default_factory=default_runs_dir)
    regex_timeout_s: float = 5.0
    preview_chars: int = 300
    limits: Limits = field(default_factory=Limits)
    aids: Aids = field(default_factory=Aids)
    code: CodeSettings = field(default_factory=CodeSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    delegation: DelegationSettings = field(default_factory=DelegationSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    context: ContextSettings = field(default_factory=ContextSettings)
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    providers: list[ProviderConfig] = field(default_factory=list)
    source: str | None = None  # the file it came from

    # ------------------------------------------------------------------ loading
    @classmethod
    def find_file(cls, explicit: str | os.PathLike[str] | None = None) -> Path | None:
        if explicit:
            p = Path(explicit).expanduser()
            if not p.is_file():
                raise ConfigError(f"config file not found: {p}")
            return p
        if os.environ.get("CONTEXTBOX_CONFIG"):
            return cls.find_file(os.environ["CONTEXTBOX_CONFIG"])
        for p in (Path("contextbox.toml"), _xdg("XDG_CONFIG_HOME", ".config") / "contextbox" / "config.toml"):
            if p.is_file():
                return p
        return None

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, env: dict[str, str] | None = None,
             **flags: Any) -> Config:
        """File, then environment (``CONTEXTBOX_*``), then ``flags`` (None values are ignored)."""
        cfg = cls()
        f = cls.find_file(path)
        if f is not None:
            try:
                data = tomllib.loads(f.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
                raise ConfigError(f"{f}: not valid TOML: {e}") from None
            cfg._apply_file(data, str(f))
            cfg.source = str(f)
        cfg._apply_env(os.environ if env is None else env)
        cfg._apply_flags(flags)
        check_ranges(cfg)
        return cfg

    def _apply_file(self, data: dict[str, Any], where: str) -> None:
        simple = {"model", "sub_model", "levels", "runs_dir", "regex_timeout_s", "preview_chars", "system"}
        sections = {"limits": self.limits, "aids": self.aids, "code": self.code, "local": self.local,
                    "delegation": self.delegation,
                    "server": self.server, "context": self.context}
        for key, val in data.items():
            if key in simple:
                self._set(key, val, where)
            elif key in sections:
                if not isinstance(val, dict):
                    raise ConfigError(f"{where}: [{key}] must be a table")
                _fill(sections[key], val, f"{where}: [{key}]")
            elif key == "prices":
                self.prices.update(_prices(val, where))
            elif key == "providers":
                self.providers = [_provider(p, where, i) for i, p in enumerate(_list_of_tables(val, where))]
            else:
                known = sorted(simple | set(sections) | {"prices", "providers"})
                raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(known)}")

    def _set(self, key: str, val: Any, where: str) -> None:
        try:
            if key == "levels":
                self.levels = None if val == "auto" else parse_levels(val)
            elif key == "runs_dir":
                self.runs_dir = Path(str(val)).expanduser()
            elif key in ("regex_timeout_s",):
                self.regex_timeout_s = float(val)
            elif key == "preview_chars":
                self.preview_chars = int(val)
            else:
                if val is not None and not isinstance(val, str):
                    raise ConfigError(f"{where}: {key} must be a string")
                setattr(self, key, val or None)
        except (TypeError, ValueError, UsageError) as e:
            raise ConfigError(f"{where}: bad value for {key}: {e}") from None

    def _apply_env(self, env: Any) -> None:
        where = "environment"
        for key in ("model", "sub_model", "levels", "runs_dir"):
            v = env.get("CONTEXTBOX_" + key.upper())
            if v:
                self._set(key, v, f"{where} CONTEXTBOX_{key.upper()}")
        for key in ("max_iterations", "timeout_s", "max_total_tokens", "max_cost_usd"):
            v = env.get("CONTEXTBOX_" + key.upper())
            if v:
                _fill(self.limits, {key: v}, f"{where} CONTEXTBOX_{key.upper()}", coerce=True)

    def _apply_flags(self, flags: dict[str, Any]) -> None:
        for key, val in flags.items():
            if val is None:
                continue
            if key in ("model", "sub_model", "levels", "runs_dir", "system"):
                self._set(key, val, f"--{key.replace('_', '-')}")
            elif key in {f.name for f in fields(Limits)}:
                _fill(self.limits, {key: val}, f"--{key.replace('_', '-')}")
            else:
                raise ConfigError(f"unknown setting {key!r}")

    # ------------------------------------------------------------------ showing
    def to_dict(self, mask: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["levels"] = list(self.levels) if self.levels is not None else "auto"
        d["runs_dir"] = str(self.runs_dir)
        d["prices"] = {k: {"input": a, "output": b} for k, (a, b) in self.prices.items()}
        if self.server.token and mask:
            d["server"]["token"] = _mask(self.server.token)
        for p, pc in zip(d["providers"], self.providers, strict=True):
            key = pc.api_key()
            p["api_key"] = (_mask(key) if mask else key) if key else (None if not pc.api_key_env else "(not set)")
        return d


def _mask(secret: str) -> str:
    return "****" if len(secret) < 12 else f"{secret[:3]}…{secret[-4:]}"


def _coerce(val: Any, cur: Any, annotation: str) -> Any:
    """``val`` as the type a dataclass field declares (its annotation string), or ValueError."""
    ann = annotation.replace(" ", "")
    if isinstance(val, str) and val.lower() in ("none", "null", "") and "None" in ann:
        return None
    if val is None:
        if "None" not in ann:
            raise ValueError("a value is required")
        return None
    if ann.startswith("bool"):  # bool, or bool | str for "auto"
        if isinstance(val, str) and val.lower() in ("true", "false") + (("auto",) if "str" in ann else ()):
            return {"true": True, "false": False, "auto": "auto"}[val.lower()]
        if not isinstance(val, bool):
            raise ValueError(f"expected true or false, got {val!r}")
        return val
    if ann.startswith("int"):
        if isinstance(val, bool) or isinstance(val, float) and not val.is_integer():
            raise ValueError(f"expected an integer, got {val!r}")
        return int(val)
    if ann.startswith("float"):
        if isinstance(val, bool):
            raise ValueError(f"expected a number, got {val!r}")
        return float(val)
    if ann.startswith("str"):
        if not isinstance(val, str):
            raise ValueError(f"expected a string, got {val!r}")
        return val
    if ann.startswith("list[str]"):
        if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
            raise ValueError(f"expected a list of strings, got {val!r}")
        return val
    return val


def _fill(obj: Any, values: dict[str, Any], where: str, coerce: bool = False) -> None:
    known = {f.name: f for f in fields(obj)}
    for key, val in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(known)}")
        try:
            val = _coerce(val, getattr(obj, key), str(known[key].type))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: bad value for {key}: {e}") from None
        setattr(obj, key, val)


#: (section, key, lowest allowed value, whether the lowest is excluded[, highest allowed value])
_RANGES: list[tuple[Any, ...]] = [
    ("limits", "max_iterations", 1, False), ("limits", "max_output_chars", 1, False),
    ("limits", "max_total_tokens", 1, False), ("limits", "max_cost_usd", 0, False),
    ("limits", "timeout_s", 0, True), ("limits", "max_consecutive_errors", 1, False),
    ("limits", "record_chars", 0, False),
    ("limits", "reserve_output_tokens", 1, False), ("limits", "max_host_input_chars", 1, False),
    ("limits", "max_host_result_chars", 1, False), ("limits", "max_host_items", 1, False),
    ("limits", "max_host_hits", 1, False), ("limits", "max_answer_chars", 1, False),
    ("delegation", "max_sub_calls", 0, False),
    ("delegation", "max_depth", 0, False), ("delegation", "max_concurrency", 1, False),
    ("delegation", "chunk_size", 1, False), ("delegation", "calibration", 0, False, 1),
    ("code", "max_output_chars", 1, False), ("code", "l2_memory_mb", 1, False), ("code", "l2_time_limit_s", 0, True),
    ("code", "l3_memory_mb", 1, False), ("code", "l3_time_limit_s", 0, True),
    ("server", "port", 1, False, 65535), ("server", "max_upload_mb", 0, True),
    ("server", "max_concurrent_runs", 1, False),
    ("local", "context_tokens", 256, False), ("local", "max_tokens", 1, False), ("local", "threads", 1, False),
    ("local", "max_output_chars", 1, False), ("aids", "too_many_hits", 0, False), ("aids", "stall_turns", 0, False), ("aids", "hit_turns", 0, False),
    (None, "preview_chars", 0, False), (None, "regex_timeout_s", 0, True), ("server", "max_queued_runs", 0, False),
    ("context", "max_files", 1, False), ("context", "max_mb", 0, True),
]


def _check(name: str, val: Any, low: float, strict: bool, high: float | None = None) -> None:
    if val is None:
        return
    if val != val or val < low or strict and val == low:  # val != val: NaN
        bound = f"greater than {low}" if strict else f"at least {low}"
        raise ConfigError(f"{name} must be {bound}, got {val}")
    if high is not None and val > high:
        raise ConfigError(f"{name} must be at most {high}, got {val}")


def check_ranges(cfg: Config) -> None:
    """Refuse values that cannot work (zero iterations, a negative timeout, a negative depth, …)."""
    if cfg.delegation.engine not in ("local", "ray"):
        raise ConfigError(f"[delegation] engine must be \"local\" or \"ray\", got {cfg.delegation.engine!r}")
    for section, key, *bounds in _RANGES:
        obj = getattr(cfg, section) if section else cfg
        _check(f"[{section}] {key}" if section else key, getattr(obj, key), *bounds)


def check_limits(limits: Limits) -> None:
    """:func:`check_ranges` for one set of limits (as a run request gives them): ConfigError, a UsageError."""
    for section, key, *bounds in _RANGES:
        if section == "limits":
            _check(key, getattr(limits, key), *bounds)


def limits_from(base: Limits, values: dict[str, Any]) -> Limits:
    """``base`` with ``values`` (``RLM(limits={...})``) applied, checked like the config file's ``[limits]``:
    an unknown name or a bad value is a :class:`ConfigError` with the same one-line message. ``None`` keeps
    the base value."""
    if not isinstance(values, dict):
        raise ConfigError(f"limits must be a dict of limit names, not {type(values).__name__}")
    known = [f.name for f in fields(base)]
    for k in values:
        if k not in known:
            raise ConfigError(f"unknown limit {k!r}; known limits: {', '.join(known)}")
    out = dataclasses.replace(base)
    _fill(out, {k: v for k, v in values.items() if v is not None}, "limits", coerce=True)
    for section, key, *bounds in _RANGES:
        if section == "limits":
            _check(f"[limits] {key}", getattr(out, key), *bounds)
    return out


def _list_of_tables(val: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(val, list) or not all(isinstance(v, dict) for v in val):
        raise ConfigError(f"{where}: providers must be [[providers]] tables")
    return val


def _provider(d: dict[str, Any], where: str, i: int) -> ProviderConfig:
    if "name" not in d:
        raise ConfigError(f"{where}: [[providers]] #{i + 1} needs a name")
    known = {f.name for f in fields(ProviderConfig)} - {"extra"}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"{where}: [[providers]] {d['name']!r}: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"known keys: {', '.join(sorted(known))}")
    pc = ProviderConfig(name=str(d["name"]))
    _fill(pc, {k: v for k, v in d.items() if k != "name"}, f"{where}: [[providers]] {d['name']!r}")
    if pc.role not in ("root", "sub", "both"):
        raise ConfigError(f"{where}: [[providers]] {pc.name!r}: role must be root, sub or both")
    if pc.kind not in ("openai", "anthropic", "local"):
        from .providers.base import plugin_kinds

        if pc.kind not in plugin_kinds():
            raise ConfigError(f"{where}: [[providers]] {pc.name!r}: kind must be \"openai\", \"anthropic\" or an "
                              f"installed plugin's kind ({', '.join(plugin_kinds()) or 'none installed'})")
    return pc


def _prices(val: Any, where: str) -> dict[str, tuple[float, float]]:
    if not isinstance(val, dict):
        raise ConfigError(f"{where}: [prices] must be a table")
    out = {}
    for spec, p in val.items():
        if not isinstance(p, dict) or set(p) - {"input", "output"}:
            raise ConfigError(f"{where}: [prices] {spec!r} must be {{input = USD/Mtok, output = USD/Mtok}}")
        out[spec] = (float(p.get("input", 0)), float(p.get("output", 0)))
    return out
