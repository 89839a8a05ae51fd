#!/usr/bin/env python3
"""Delegation benchmark: batched sub-calls over real HTTP on 127.0.0.1.

    .venv/bin/python bench/bench_delegation.py
    .venv/bin/python bench/bench_delegation.py --latency 0.5 --calls 64 --concurrency 16

What it measures (targets in brackets), each through a full ``RLM`` run whose scripted
root sends one L4 command, against the fake OpenAI-compatible server of ``tests/``:

* ``llm_query_batched`` of 64 prompts at concurrency 16 against a server that answers
  after 500 ms: the action's wall time [≤ 2.6 s; the ideal is 4 waves × 0.5 s = 2.0 s];
* the same as ``llm_map`` over War and Peace cut into 64 chunks (if the file is there);
* engine overhead per sub-call [≤ 5 ms]: (a) engine only: an instant in-process
  sub-model, calls made one at a time, wall time / calls; (b) against the bare SDK: the
  same 64-call batch made by a plain thread pool calling the provider, (engine wall −
  SDK wall) / 64; also shown: the median sub-call latency minus the server's 500 ms;
* failover: a pool of two endpoints where one returns 500 for every request (once
  answering at once, once after the same 500 ms): all 64 answers must come back;
* the very first batch of the process is reported apart: it pays the one-time import of
  the ``openai`` SDK (~0.6 s on a slow machine);
* the usage identity: the run's usage totals equal the server's own request and token counts.

Prints a Markdown table and writes ``bench/out/bench_delegation.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from fakeserver import FakeLLMServer  # noqa: E402

from contextbox import RLM, Config, Context  # noqa: E402
from contextbox.providers import ScriptedProvider  # noqa: E402
from contextbox.providers.base import ProviderConfig  # noqa: E402
from contextbox.providers.openai_compat import OpenAIProvider  # noqa: E402
from contextbox.providers.pool import Pool  # noqa: E402
from contextbox.types import Completion  # noqa: E402

WAR_AND_PEACE = ROOT.parent / "shared" / "data" / "war_and_peace.txt"
TARGETS = {"batch_s": 2.6, "overhead_ms": 5.0}


def cmd(op: str, **args: Any) -> str:
    return json.dumps({"op": op, **args})


def config(concurrency: int) -> Config:
    cfg = Config()
    cfg.aids.first_turn = False
    cfg.delegation.max_concurrency = concurrency
    cfg.delegation.max_sub_calls = None  # the 2,000-call batch measures throughput, not the default cap
    return cfg


def run_one(sub: Any, command: str, context: Any, concurrency: int) -> dict[str, Any]:
    """A full run: the root sends ``command`` then answers; returns timings and counts."""
    root = ScriptedProvider([command, cmd("final", answer="done")])
    rlm = RLM(model=root, sub_model=sub, levels="l1,l4", config=config(concurrency), store=None)
    t0 = time.monotonic()
    res = rlm.run("bench?", context if isinstance(context, Context) else Context.from_value(context))
    wall = time.monotonic() - t0
    start = next(e for e in res.events if e.type == "action_start")
    end = next(e for e in res.events if e.type == "action_end")
    subs = [e for e in res.events if e.type == "sub_call"]
    first = end.data["output"].split("\n", 1)[0]
    return {
        "status": res.status,
        "action_s": end.ts - start.ts,
        "run_s": wall,
        "summary": first,
        "answered": sum(1 for ln in end.data["output"].splitlines()
                        if ln.startswith("[") and "] error:" not in ln),
        "latencies": [e.data["latency_s"] for e in subs],
        "retries": sum(1 for e in res.events if e.type == "retry"),
        "failovers": sum(1 for e in res.events if e.type == "failover"),
        "usage": res.usage.total,
        "sub_usage": res.usage.to_dict()["by_role"].get("sub", {}),
    }


def http_sub(srv: FakeLLMServer) -> OpenAIProvider:
    return OpenAIProvider(ProviderConfig("fake", base_url=srv.base_url, timeout_s=30), "sub")


def bench_batch(latency: float, n: int, conc: int) -> dict[str, Any]:
    with FakeLLMServer(replies="a short answer", latency=latency) as srv:
        r = run_one(http_sub(srv), cmd("llm_query_batched", prompts=[f"question {i}?" for i in range(n)]), "ctx",
                    conc)
        sub_tokens = (r["sub_usage"]["input_tokens"], r["sub_usage"]["output_tokens"])
        r["server"] = {"requests": srv.request_count, "prompt_tokens": srv.prompt_tokens_total,
                       "completion_tokens": srv.completion_tokens_total}
        r["usage_identity"] = (r["sub_usage"]["calls"] == srv.request_count
                               and sub_tokens == (srv.prompt_tokens_total, srv.completion_tokens_total))
    return r


def bench_raw_sdk(latency: float, n: int, conc: int) -> float:
    """The same batch without the engine: a thread pool calling the provider directly."""
    from concurrent.futures import ThreadPoolExecutor

    with FakeLLMServer(replies="a short answer", latency=latency) as srv:
        sub = http_sub(srv)
        t0 = time.monotonic()
        with ThreadPoolExecutor(conc) as ex:
            list(ex.map(lambda i: sub.complete([{"role": "user", "content": f"question {i}?"}]), range(n)))
        return time.monotonic() - t0


def bench_map(latency: float, n: int, conc: int) -> dict[str, Any] | None:
    if not WAR_AND_PEACE.is_file():
        return None
    text = WAR_AND_PEACE.read_text(encoding="utf-8")
    size = math.ceil(len(text) / n)
    with FakeLLMServer(replies="Pierre", latency=latency) as srv:
        r = run_one(http_sub(srv), cmd("llm_map", prompt="Name one character here.", chunk_size=size), text, conc)
        r["usage_identity"] = (r["sub_usage"]["calls"] == srv.request_count
                               and r["sub_usage"]["input_tokens"] == srv.prompt_tokens_total
                               and r["sub_usage"]["output_tokens"] == srv.completion_tokens_total)
    return r


class Instant:
    """A sub-model that answers at once (to time the engine alone)."""

    name = "instant/sub"
    context_window = None

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
        return Completion("ok", 1, 1, model=self.name)


def bench_engine_only(n: int, conc: int) -> dict[str, Any]:
    r = run_one(Instant(), cmd("llm_query_batched", prompts=[f"q{i}" for i in range(n)]), "ctx", conc)
    r["ms_per_call"] = r["action_s"] / n * 1000
    return r


def bench_failover(latency: float, bad_latency: float, n: int, conc: int) -> dict[str, Any]:
    with FakeLLMServer(replies="good answer", latency=latency) as good, \
            FakeLLMServer(latency=bad_latency) as bad:
        bad.fail_all(500)
        configs = [ProviderConfig("fleet", base_url=bad.base_url, max_concurrency=conc, timeout_s=30),
                   ProviderConfig("fleet", base_url=good.base_url, max_concurrency=conc, timeout_s=30)]
        pool = Pool("fleet/sub", [OpenAIProvider(c, "sub") for c in configs], configs)
        r = run_one(pool, cmd("llm_query_batched", prompts=[f"question {i}?" for i in range(n)]), "ctx", conc)
        r["bad_requests"] = bad.request_count
        r["good_requests"] = good.request_count
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--calls", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", default=str(HERE / "out" / "bench_delegation.json"))
    args = ap.parse_args()
    lat, n, conc = args.latency, args.calls, args.concurrency
    ideal = math.ceil(n / conc) * lat

    cold = bench_batch(lat, n, conc)  # the first use of the HTTP SDK in this process (imports it)
    batch = bench_batch(lat, n, conc)
    raw = bench_raw_sdk(lat, n, conc)
    wp = bench_map(lat, n, conc)
    engine1 = bench_engine_only(500, 1)
    engine16 = bench_engine_only(2000, conc)
    fo_fast = bench_failover(lat, 0.0, n, conc)
    fo_slow = bench_failover(lat, lat, n, conc)
    http_overhead_ms = (statistics.median(batch["latencies"]) - lat) * 1000
    vs_raw_ms = (batch["action_s"] - raw) / n * 1000

    rows = [
        ("cold: first batch in the process (includes importing the SDK)", f"{cold['action_s']:.3f} s", "—", True),
        ("llm_query_batched 64×500ms @16: action wall", f"{batch['action_s']:.3f} s",
         f"≤ {TARGETS['batch_s']} s (ideal {ideal:.1f} s)", batch["action_s"] <= TARGETS["batch_s"]),
        ("  answers / usage = server's count", f"{batch['answered']}/{n} / {batch['usage_identity']}", "all / True",
         batch["answered"] == n and batch["usage_identity"]),
    ]
    if wp is not None:
        rows += [
            ("llm_map War and Peace 64 chunks @16: action wall", f"{wp['action_s']:.3f} s",
             f"≤ {TARGETS['batch_s']} s (ideal {ideal:.1f} s)", wp["action_s"] <= TARGETS["batch_s"]),
            ("  answers / usage = server's count", f"{wp['answered']}/{n} / {wp['usage_identity']}", "all / True",
             wp["answered"] == n and wp["usage_identity"]),
        ]
    rows += [
        ("engine overhead per sub-call: instant sub-model, serial, 500 calls", f"{engine1['ms_per_call']:.3f} ms",
         f"≤ {TARGETS['overhead_ms']} ms", engine1["ms_per_call"] <= TARGETS["overhead_ms"]),
        (f"engine overhead per sub-call vs the bare SDK batch ({raw:.3f} s): (wall − SDK wall) / {n}",
         f"{vs_raw_ms:.2f} ms", f"≤ {TARGETS['overhead_ms']} ms", vs_raw_ms <= TARGETS["overhead_ms"]),
        ("median sub-call latency − 500 ms (HTTP + SDK + engine)", f"{http_overhead_ms:.2f} ms", "—", True),
        (f"engine only, 2000 calls @{conc}: wall / call", f"{engine16['ms_per_call']:.3f} ms", "—", True),
        ("failover (bad endpoint: instant 500): action wall", f"{fo_fast['action_s']:.3f} s",
         f"{n} answers", fo_fast["answered"] == n),
        ("  answers · retries · failovers · bad/good requests",
         f"{fo_fast['answered']} · {fo_fast['retries']} · {fo_fast['failovers']} · "
         f"{fo_fast['bad_requests']}/{fo_fast['good_requests']}", "—", True),
        ("failover (bad endpoint: 500 after 500 ms): action wall", f"{fo_slow['action_s']:.3f} s",
         f"{n} answers", fo_slow["answered"] == n),
        ("  answers · retries · failovers · bad/good requests",
         f"{fo_slow['answered']} · {fo_slow['retries']} · {fo_slow['failovers']} · "
         f"{fo_slow['bad_requests']}/{fo_slow['good_requests']}", "—", True),
    ]
    print("| measure | value | target | ok |\n|---|---|---|---|")
    for name, value, target, ok in rows:
        print(f"| {name} | {value} | {target} | {'yes' if ok else 'NO'} |")

    def slim(r: dict[str, Any] | None) -> dict[str, Any] | None:
        if r is None:
            return None
        d = {k: v for k, v in r.items() if k not in ("latencies", "usage")}
        d["usage_total"] = r["usage"].to_dict()
        if r["latencies"]:
            lats = sorted(r["latencies"])
            d["latency_s"] = {"mean": statistics.mean(lats), "p50": lats[len(lats) // 2],
                              "p95": lats[int(len(lats) * 0.95) - 1], "max": lats[-1]}
        return d

    out = {
        "params": {"latency_s": lat, "calls": n, "concurrency": conc, "ideal_s": ideal},
        "targets": TARGETS,
        "batch_cold": slim(cold),
        "batch": slim(batch),
        "llm_map_war_and_peace": slim(wp),
        "raw_sdk_batch_s": raw,
        "engine_vs_raw_ms_per_call": vs_raw_ms,
        "median_latency_over_server_ms": http_overhead_ms,
        "engine_only_serial": slim(engine1),
        "engine_only_concurrent": slim(engine16),
        "failover_instant_500": slim(fo_fast),
        "failover_slow_500": slim(fo_slow),
        "all_ok": all(ok for *_, ok in rows),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
    print(f"\nwritten to {path}")
    return 0 if out["all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
