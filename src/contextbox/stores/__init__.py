"""Where runs are recorded: every event of every run, behind the :class:`RunStore` protocol.

* :mod:`.jsonl` — the protocol, and :class:`JsonlRunStore`: one ``<run_id>.jsonl`` file per run;
* :mod:`.sqlite` — :class:`SqliteRunStore` (runs, events and usage in one WAL-mode database: what the
  server, ``rlm runs`` and the API's ``store=`` use) and :class:`TeeRunStore` (several stores in step).
"""

from .jsonl import JsonlRunStore, RunStore, summarize
from .sqlite import SqliteRunStore, TeeRunStore, default_db_path, default_store

__all__ = ["JsonlRunStore", "RunStore", "SqliteRunStore", "TeeRunStore", "default_db_path", "default_store", "summarize"]
