"""The SQLite run store: runs, events and usage in one WAL-mode database.

:class:`SqliteRunStore` implements the :class:`~contextbox.stores.jsonl.RunStore` protocol and
adds what the server needs: a row per run (status, answer, timings) kept up to date as
events arrive, paged listing, reading events after a given ``seq`` (an event's id is
``(run_id, seq)``), marking runs left in flight by a dead process as ``interrupted``,
and JSONL export. It is safe to use from many threads: writes go through one connection
under a lock, each thread reads through its own connection (WAL lets readers run while
a writer commits).

:class:`TeeRunStore` writes to several stores at once (the CLI keeps its JSONL files and
the SQLite database in step) and reads from the first that knows a run.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..types import Event

log = logging.getLogger("contextbox")

#: Statuses of a run that has not ended.
ACTIVE = ("queued", "running")
INTERRUPTED_REASON = "the process running it (pid {pid}) stopped while the run was in flight (a server stopped or a CLI killed)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    status      TEXT NOT NULL DEFAULT 'queued',
    created     REAL NOT NULL,
    started     REAL,
    finished    REAL,
    question    TEXT,
    model       TEXT,
    sub_model   TEXT,
    levels      TEXT,
    answer      TEXT,
    reason      TEXT,
    iterations  INTEGER,
    tokens      INTEGER,
    cost_usd    REAL,
    elapsed_s   REAL,
    usage       TEXT,
    source      TEXT,
    meta        TEXT,
    pid         INTEGER,
    session_id  TEXT
);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS sessions (
    session_id  TEXT PRIMARY KEY,
    created     REAL NOT NULL,
    context     TEXT
);
CREATE TABLE IF NOT EXISTS events (
    run_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    path    TEXT NOT NULL,
    ts      REAL NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (
    run_id   TEXT PRIMARY KEY,
    created  REAL NOT NULL,
    request  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    run_id        TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    path          TEXT NOT NULL,
    role          TEXT NOT NULL,
    model         TEXT,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL,
    latency_s     REAL,
    PRIMARY KEY (run_id, seq)
);
"""

_RUN_COLUMNS = ("run_id", "status", "created", "started", "finished", "question", "model", "sub_model", "levels",
                "answer", "reason", "iterations", "tokens", "cost_usd", "elapsed_s", "usage", "source", "meta",
                "session_id")


def private_dir(path: Path, what: str) -> None:
    """Create ``path`` (and its parents) for this user only (0700); a file in the way is a UsageError."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what}: {path} is not a directory")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{what}: cannot create the directory {path}: {e.strerror or e}") from None


def private_file(path: Path, what: str) -> None:
    """Create ``path`` empty for this user only (0600) unless it exists; SQLite gives its
    ``-wal`` and ``-shm`` files the database file's permissions."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except IsADirectoryError:
        raise UsageError(f"{what}: {path} is a directory, not a database file") from None
    except OSError as e:
        raise UsageError(f"{what}: cannot open {path}: {e.strerror or e}") from None


def default_db_path(runs_dir: str | os.PathLike[str]) -> Path:
    return Path(runs_dir).expanduser() / "runs.sqlite"


def _alive(pid: int | None) -> bool:
    """Whether another live process (one that may still finish the run) has this pid."""
    if not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        pass
    try:  # a killed process not yet reaped by its parent is a zombie: gone all the same
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X")
    except OSError:
        return True


def _cost(d: dict[str, Any]) -> float | None:
    """A call event's cost: None (unknown price) stays None; an old event without the field costs 0."""
    if "cost_usd" not in d:
        return 0.0
    c = d["cost_usd"]
    return None if c is None else float(c)


def ambiguous(prefix: str, matches: list[str]) -> str:
    shown = ", ".join(matches[:2]) + (", …" if len(matches) > 2 else "")
    return f"run id prefix {prefix!r} is ambiguous: it matches {shown}; give more of the id"


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, default=str)


def default_store(config: Any, runs_dir: str | os.PathLike[str] | None = None) -> TeeRunStore:
    """The run store ``rlm ask`` and the Python API record into: the SQLite database ``rlm serve`` and
    ``rlm runs`` read (``<runs_dir>/runs.sqlite``, or ``[server] db``) and the JSONL logs, kept in step."""
    from .jsonl import JsonlRunStore

    root = Path(runs_dir).expanduser() if runs_dir else Path(config.runs_dir)
    if root.exists() and not root.is_dir():
        raise UsageError(f"the runs directory {root} is not a directory (--runs-dir, runs_dir or $CONTEXTBOX_RUNS_DIR)")
    db = default_db_path(root) if runs_dir or not config.server.db else Path(config.server.db).expanduser()
    return TeeRunStore(SqliteRunStore(db), JsonlRunStore(root))


class SqliteRunStore:
    """Runs, events and usage in SQLite (WAL). Thread-safe."""

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 30.0):
        self.path = Path(path).expanduser()
        self.root = self.path.parent  # what the CLI prints as "where the runs are"
        private_dir(self.path.parent, "the run store")
        private_file(self.path, "the run store")
        self._timeout = timeout_s
        self._lock = threading.RLock()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._closed = False
        self._rows: set[str] = set()  # runs with a row, that have not ended (their next event skips the insert)
        try:
            self._w = self._connect()
            with self._lock:
                self._w.execute("PRAGMA journal_mode=WAL")
                self._migrate()
                self._w.executescript(_SCHEMA)
                self._w.commit()
        except sqlite3.DatabaseError as e:
            self.close()
            raise UsageError(f"the run store {self.path} cannot be used: {e}") from None

    def _migrate(self) -> None:
        """Bring a store written by an older version up to date (idempotent)."""
        runs = {r["name"] for r in self._w.execute("PRAGMA table_info(runs)")}
        if runs and "session_id" not in runs:  # a run asked in a session (rlm chat, RLM.session) names it
            self._w.execute("ALTER TABLE runs ADD COLUMN session_id TEXT")
        cols = {r["name"]: r for r in self._w.execute("PRAGMA table_info(usage)")}
        if cols.get("cost_usd") is not None and cols["cost_usd"]["notnull"]:
            # a call of a model with no known price has a NULL cost (unknown), not 0
            self._w.executescript("""
                BEGIN IMMEDIATE;
                ALTER TABLE usage RENAME TO usage_old;
                CREATE TABLE usage (
                    run_id TEXT NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL, role TEXT NOT NULL,
                    model TEXT, input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
                    cost_usd REAL, latency_s REAL, PRIMARY KEY (run_id, seq));
                INSERT INTO usage SELECT run_id, seq, path, role, model, input_tokens, output_tokens, cost_usd,
                    latency_s FROM usage_old;
                DROP TABLE usage_old;
                COMMIT;
            """)
            log.info("run store %s: usage.cost_usd may now be NULL (unknown price)", self.path)

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, timeout=self._timeout, check_same_thread=False, isolation_level=None)
        c.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
        c.execute("PRAGMA synchronous=NORMAL")
        c.row_factory = sqlite3.Row
        with self._lock:
            self._conns.append(c)
        return c

    def _r(self) -> sqlite3.Connection:
        """This thread's read connection."""
        if self._closed:
            raise RuntimeError("the run store is closed")
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = self._connect()
        return c

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for c in self._conns:
                try:
                    c.close()
                except sqlite3.Error:  # pragma: no cover
                    pass
            self._conns.clear()

    # ------------------------------------------------------------------ writing
    def create_run(self, run_id: str, *, question: str | None = None, model: str | None = None,
                   sub_model: str | None = None, levels: list[str] | None = None, source: str | None = None,
                   meta: dict[str, Any] | None = None, status: str = "queued") -> None:
        """Record a run before its first event (the server does, so a queued run is listed)."""
        with self._lock:
            self._w.execute(
                "INSERT OR IGNORE INTO runs (run_id, status, created, question, model, sub_model, levels, source, meta,"
                " pid) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, status, time.time(), question, model, sub_model, _dumps(levels) if levels else None,
                 source, _dumps(meta) if meta else None, os.getpid()))

    def append(self, event: Event) -> None:
        """Store one event (and its usage row, and what it changes in the run's row) in one transaction."""
        rid, d = event.run_id, event.data
        if not rid:
            raise UsageError("an event without a run id cannot be stored")
        with self._lock:
            w = self._w
            try:  # an exception (a KeyboardInterrupt) may land after any statement: no transaction stays open
                w.execute("BEGIN IMMEDIATE")
                if rid not in self._rows:  # a run's row, once written here, stays (no need to ask again)
                    w.execute("INSERT OR IGNORE INTO runs (run_id, status, created, pid) VALUES (?, 'running', ?, ?)",
                              (rid, event.ts, os.getpid()))
                cur = w.execute("INSERT OR IGNORE INTO events (run_id, seq, type, path, ts, data) VALUES (?,?,?,?,?,?)",
                                (rid, event.seq, event.type, event.path, event.ts, _dumps(d)))
                if cur.rowcount == 0:
                    log.warning("run %s: event seq %d stored already; the duplicate is ignored", rid, event.seq)
                self._usage_row(w, event)
                if event.path == "0":
                    self._run_row(w, event)
                w.execute("COMMIT")
            except BaseException:
                if w.in_transaction:  # not after COMMIT: the event is stored, the exception goes on
                    w.execute("ROLLBACK")
                raise
            if event.type == "run_end" and event.path == "0":
                self._rows.discard(rid)
            else:
                self._rows.add(rid)

    @staticmethod
    def _usage_row(w: sqlite3.Connection, ev: Event) -> None:
        d = ev.data
        if ev.type == "lm_response":
            role = "root" if ev.path == "0" else "child"
        elif ev.type == "sub_call":
            role = "sub"
        else:
            return
        w.execute("INSERT OR IGNORE INTO usage (run_id, seq, path, role, model, input_tokens, output_tokens, cost_usd,"
                  " latency_s) VALUES (?,?,?,?,?,?,?,?,?)",
                  (ev.run_id, ev.seq, ev.path, role, d.get("model"), int(d.get("input_tokens") or 0),
                   int(d.get("output_tokens") or 0), _cost(d), d.get("latency_s")))

    @staticmethod
    def _run_row(w: sqlite3.Connection, ev: Event) -> None:
        d = ev.data
        if ev.type == "run_start":
            w.execute("UPDATE runs SET status='running', started=?, question=COALESCE(?, question), model=?,"
                      " sub_model=?, levels=?, session_id=COALESCE(?, session_id) WHERE run_id=?"
                      " AND status IN ('queued', 'running')",
                      (ev.ts, d.get("question"), d.get("model"), d.get("sub_model"),
                       _dumps(d.get("levels")) if d.get("levels") is not None else None, d.get("session_id"),
                       ev.run_id))
            if d.get("session_id"):
                w.execute("INSERT OR IGNORE INTO sessions (session_id, created, context) VALUES (?,?,?)",
                          (d["session_id"], ev.ts, _dumps(d.get("context"))))
        elif ev.type == "iteration_start":
            w.execute("UPDATE runs SET iterations=? WHERE run_id=?", (d.get("iteration"), ev.run_id))
        elif ev.type == "run_end":
            total = (d.get("usage") or {}).get("total") or {}
            w.execute("UPDATE runs SET status=?, finished=?, answer=?, reason=?, iterations=?, tokens=?, cost_usd=?,"
                      " elapsed_s=?, usage=? WHERE run_id=?",
                      (d.get("status") or "failed", ev.ts, d.get("answer"), d.get("reason"), d.get("iterations"),
                       total.get("total_tokens"), total.get("cost_usd"), d.get("elapsed_s"),
                       _dumps(d.get("usage")) if d.get("usage") is not None else None, ev.run_id))

    def next_seq(self, run_id: str) -> int:
        row = self._r().execute("SELECT MAX(seq) FROM events WHERE run_id=?", (run_id,)).fetchone()
        return 0 if row[0] is None else row[0] + 1

    def finish_run(self, run_id: str, status: str, reason: str) -> Event:
        """End a run that cannot end itself (it crashed, or its process died): an ``error``
        and a ``run_end`` event are appended so readers see a whole run."""
        with self._lock:
            seq = self.next_seq(run_id)
            run = self.get_run(run_id) or {}
            usage = self.usage_totals(run_id)
            started = run.get("started") or run.get("created") or time.time()
            self.append(Event("error", {"message": reason, "fatal": True, "status": status}, run_id=run_id, seq=seq))
            end = Event("run_end", {"answer": None, "status": status, "reason": reason,
                                    "iterations": run.get("iterations") or 0, "usage": usage, "run_id": run_id,
                                    "elapsed_s": round(max(0.0, time.time() - started), 4)},
                        run_id=run_id, seq=seq + 1)
            self.append(end)
            return end

    # ------------------------------------------------------------------ the server's queue
    def enqueue(self, run_id: str, request: dict[str, Any]) -> None:
        """Keep what it takes to start a queued run again after a restart (see :meth:`queued_requests`)."""
        with self._lock:
            self._w.execute("INSERT OR REPLACE INTO queue (run_id, created, request) VALUES (?,?,?)",
                            (run_id, time.time(), _dumps(request)))

    def dequeue(self, run_id: str) -> None:
        with self._lock:
            self._w.execute("DELETE FROM queue WHERE run_id=?", (run_id,))

    def queued_requests(self) -> list[tuple[str, dict[str, Any]]]:
        """Queued runs still waiting (status ``queued``), oldest first, with their requests."""
        rows = self._r().execute(
            "SELECT q.run_id, q.request FROM queue q JOIN runs r ON r.run_id = q.run_id WHERE r.status='queued'"
            " ORDER BY q.created, q.run_id").fetchall()
        return [(r[0], json.loads(r[1])) for r in rows]

    def mark_interrupted(self, *, keep_own: bool = False) -> list[str]:
        """Mark every run still queued or running whose process is gone as ``interrupted``
        (at startup, before any run starts; or on a read with ``keep_own``, which leaves this
        process's runs alone). Returns their ids. A queued run whose request is in the queue
        table stays queued: the new server starts it."""
        me = os.getpid()
        with self._lock:
            waiting = {r[0] for r in self._w.execute("SELECT run_id FROM queue").fetchall()}
            stale = [(r[0], r[1]) for r in self._w.execute(
                "SELECT run_id, pid, status FROM runs WHERE status IN ('queued', 'running')").fetchall()
                if not (keep_own and r[1] == me) and not _alive(r[1])
                and not (r[0] in waiting and r[2] == "queued")]
            ids = [rid for rid, _ in stale]
            for rid, pid in stale:
                self.finish_run(rid, "interrupted", INTERRUPTED_REASON.format(pid=pid or "?"))
        if ids:
            log.warning("marked %d run(s) interrupted: %s", len(ids), ", ".join(ids))
        return ids

    # ------------------------------------------------------------------ reading
    def resolve_id(self, run_id: str) -> str:
        """The full id of a run given its id or an unambiguous prefix."""
        c = self._r()
        if c.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone():
            return run_id
        esc = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = c.execute("SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY run_id LIMIT 3",
                         (esc + "%",)).fetchall()
        if len(rows) > 1 and run_id:
            raise UsageError(ambiguous(run_id, [r[0] for r in rows]))
        if len(rows) != 1 or not run_id:
            raise UsageError(f"no run {run_id!r} in {self.path}; see 'rlm runs list'")
        return rows[0][0]

    def has_run(self, run_id: str) -> bool:
        return self._r().execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone() is not None

    def events(self, run_id: str, after: int = -1, limit: int | None = None) -> list[Event]:
        """Events of a run with ``seq > after``, in order (at most ``limit``)."""
        rid = run_id if self.has_run(run_id) or after >= 0 else self.resolve_id(run_id)
        sql = "SELECT run_id, seq, type, path, ts, data FROM events WHERE run_id=? AND seq>? ORDER BY seq"
        args: tuple[Any, ...] = (rid, after)
        if limit is not None:
            sql += " LIMIT ?"
            args += (int(limit),)
        return [Event(r["type"], json.loads(r["data"]), run_id=r["run_id"], seq=r["seq"], ts=r["ts"], path=r["path"])
                for r in self._r().execute(sql, args)]

    def count_events(self, run_id: str) -> int:
        return self._r().execute("SELECT COUNT(*) FROM events WHERE run_id=?", (run_id,)).fetchone()[0]

    def _row(self, r: sqlite3.Row) -> dict[str, Any]:
        d = {k: r[k] for k in _RUN_COLUMNS}
        d["levels"] = json.loads(d["levels"]) if d["levels"] else None
        d["usage"] = json.loads(d["usage"]) if d["usage"] else None
        d["meta"] = json.loads(d["meta"]) if d["meta"] else None
        return d

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run's row (status, question, answer, timings, usage...), or None."""
        r = self._r().execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if r is None:
            return None
        d = self._row(r)
        if d["usage"] is None:
            d["usage"] = self.usage_totals(run_id)
        return d

    def usage_totals(self, run_id: str) -> dict[str, Any]:
        """Usage of a run from its usage rows, shaped like ``UsageReport.to_dict()`` (total, by_role, by_model)."""
        rows = self._r().execute(
            "SELECT role, model, COUNT(*) AS calls, SUM(input_tokens) AS i, SUM(output_tokens) AS o,"
            " SUM(cost_usd) AS c, SUM(cost_usd IS NULL) AS unknown FROM usage WHERE run_id=? GROUP BY role, model",
            (run_id,)).fetchall()

        def tot(rs: list[sqlite3.Row]) -> dict[str, Any]:
            i, o = sum(r["i"] or 0 for r in rs), sum(r["o"] or 0 for r in rs)
            unknown = sum(r["unknown"] or 0 for r in rs)
            cost = None if unknown else round(sum(r["c"] or 0.0 for r in rs), 8)
            return {"calls": sum(r["calls"] for r in rs), "input_tokens": i, "output_tokens": o,
                    "total_tokens": i + o, "cost_usd": cost, "cost_unknown_calls": unknown, "estimated": False}

        by_role: dict[str, list[sqlite3.Row]] = {}
        by_model: dict[str, list[sqlite3.Row]] = {}
        for r in rows:
            by_role.setdefault(r["role"], []).append(r)
            by_model.setdefault(r["model"] or "", []).append(r)
        return {"total": tot(rows), "by_role": {k: tot(v) for k, v in by_role.items()},
                "by_model": {k: tot(v) for k, v in by_model.items()}}

    def list_runs(self, limit: int = 50, offset: int = 0, status: str | None = None,
                  session_id: str | None = None) -> list[dict[str, Any]]:
        """Newest first; rows shaped like :func:`contextbox.stores.jsonl.summarize` plus timings. ``session_id``:
        only the questions of that session."""
        sql = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"
        where: list[str] = []
        args: tuple[Any, ...] = ()
        if status:
            where.append("status=?")
            args += (status,)
        if session_id:
            where.append("session_id=?")
            args += (session_id,)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY COALESCE(started, created) DESC, run_id DESC LIMIT ? OFFSET ?"
        out = []
        for r in self._r().execute(sql, args + (int(limit), int(offset))):
            d = self._row(r)
            d.pop("usage")
            d["started"] = d["started"] or d["created"]
            out.append(d)
        return out

    def count_runs(self, status: str | None = None) -> int:
        if status:
            return self._r().execute("SELECT COUNT(*) FROM runs WHERE status=?", (status,)).fetchone()[0]
        return self._r().execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def export_jsonl(self, run_id: str) -> Iterator[str]:
        """The run's events as JSON lines (with the newline), in order — the JSONL run log format."""
        rid = self.resolve_id(run_id)
        after = -1
        while True:
            page = self.events(rid, after=after, limit=1000)
            if not page:
                return
            for ev in page:
                yield json.dumps(ev.to_dict(), ensure_ascii=False, default=str) + "\n"
            after = page[-1].seq


class TeeRunStore:
    """Append to every store; read from the first one that has the run. ``list_runs`` merges."""

    def __init__(self, *stores: Any):
        if not stores:
            raise ValueError("TeeRunStore needs at least one store")
        self.stores = stores
        self.root = stores[0].root

    def append(self, event: Event) -> None:
        err: OSError | None = None
        for s in self.stores:
            try:
                s.append(event)
            except (OSError, sqlite3.Error) as e:  # one broken log must not lose the other
                log.error("run log write failed (%s): %s", type(s).__name__, e)
                err = OSError(str(e))
        if err is not None:
            raise err

    def mark_interrupted(self) -> list[str]:
        """Runs whose process is gone become ``interrupted`` (in the SQLite stores)."""
        return [rid for s in self.stores if isinstance(s, SqliteRunStore) for rid in s.mark_interrupted()]

    def finish_run(self, run_id: str, status: str, reason: str) -> None:
        """End a run that cannot end itself, in every store (when it has not ended already)."""
        first = next((s for s in self.stores if isinstance(s, SqliteRunStore)), None)
        if first is None or (first.get_run(run_id) or {}).get("status") not in ACTIVE:
            return
        end = first.finish_run(run_id, status, reason)
        for ev in first.events(run_id, after=end.seq - 2):
            for s in self.stores:
                if s is not first:
                    s.append(ev)

    def events(self, run_id: str) -> list[Event]:
        last: Exception | None = None
        for s in self.stores:
            try:
                evs = s.events(run_id)
            except UsageError as e:
                if last is None or "ambiguous" in str(e):
                    last = e
                continue
            if evs:
                return evs
        raise last or UsageError(f"no run {run_id!r} in {self.root}; see 'rlm runs list'")

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for s in self.stores:
            for r in s.list_runs(limit):
                seen.setdefault(r["run_id"], r)
        rows = sorted(seen.values(), key=lambda r: (r.get("started") or 0, r["run_id"]), reverse=True)
        return rows[:limit]

    def export_jsonl(self, run_id: str) -> Iterator[str]:
        for ev in self.events(run_id):
            yield json.dumps(ev.to_dict(), ensure_ascii=False, default=str) + "\n"

    def close(self) -> None:
        for s in self.stores:
            s.close()
