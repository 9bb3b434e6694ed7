"""The job store: every queued generation and its result, in one SQLite file in the data folder.

SQLite because it is embedded (no server to install), transactional (a job's state and its result
change together or not at all) and survives a crash of the process mid-write (WAL journal). One
row per job; result images live on disk under `results/<job id>/`, written atomically before the
row says "done", so a row never points at a missing or half-written file.

States: ``pending → running → done | failed | interrupted``. A pending job can also be cancelled
(``interrupted`` without having run). :meth:`JobStore.recover` runs once at start-up: a job found
``running`` was running when the process died; it is marked ``failed`` with that reason and never
run a second time.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

PENDING, RUNNING, DONE, FAILED, INTERRUPTED = "pending", "running", "done", "failed", "interrupted"
STATUSES = (PENDING, RUNNING, DONE, FAILED, INTERRUPTED)
FINISHED = (DONE, FAILED, INTERRUPTED)
KINDS = ("txt2img", "img2img")
DIED_REASON = "the server stopped while this job was running"
_SQLITE_MAX = 2 ** 63 - 1  # the largest integer SQLite stores (a larger page offset is past the end anyway)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    position REAL NOT NULL,
    source TEXT NOT NULL DEFAULT 'serena',
    name TEXT,
    request TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    result TEXT,
    callback_url TEXT,
    checkpoint TEXT,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status_position ON jobs(status, position);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class JobRecord:
    """One row of the store. `request` is the request body as JSON (A1111 field names); `result`,
    once done, is ``{"images": [file names], "infotexts": [...], "info": "<Processed.js()>"}``."""

    id: str
    kind: str
    request: dict[str, Any]
    status: str = PENDING
    position: float = 0.0
    seq: int = 0
    source: str = "serena"
    name: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    callback_url: str | None = None
    checkpoint: str | None = None
    worker: str | None = None

    @property
    def finished_state(self) -> bool:
        return self.status in FINISHED


class MalformedJob(ValueError):
    """A row that cannot be read back (edited by hand, or written by another program)."""


def _row_to_record(row: sqlite3.Row) -> JobRecord:
    try:
        request = json.loads(row["request"])
        result = json.loads(row["result"]) if row["result"] else None
        if not isinstance(request, dict) or (result is not None and not isinstance(result, dict)):
            raise ValueError("request and result must be JSON objects")
    except (TypeError, ValueError) as e:
        raise MalformedJob(f"job {row['id']}: {e}") from e
    return JobRecord(id=row["id"], kind=row["kind"], request=request, status=row["status"], position=row["position"],
                     seq=row["seq"], source=row["source"], name=row["name"], created=row["created"],
                     started=row["started"], finished=row["finished"], error=row["error"], result=result,
                     callback_url=row["callback_url"], checkpoint=row["checkpoint"], worker=row["worker"])


class JobStore:
    """The jobs of one data folder: `<folder>/jobs.sqlite3` and `<folder>/results/<id>/`.

    Thread-safe: one connection, used under a lock (SQLite serialises writers anyway)."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)
        os.makedirs(os.path.join(self.folder, "results"), exist_ok=True)
        self.path = os.path.join(self.folder, "jobs.sqlite3")
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing -----------------------------------------------------------------------------
    def add(self, record: JobRecord) -> JobRecord:
        """Insert a new job at the end of the queue (its `position` and `seq` are assigned here)."""
        with self._lock, self._transaction():
            top = self._db.execute("SELECT COALESCE(MAX(seq), 0), COALESCE(MAX(position), 0) FROM jobs").fetchone()
            record.seq, record.position = top[0] + 1, float(top[1]) + 1.0
            self._db.execute(
                "INSERT INTO jobs (id, seq, kind, status, position, source, name, request, created, callback_url,"
                " checkpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.seq, record.kind, record.status, record.position, record.source, record.name,
                 json.dumps(record.request), record.created, record.callback_url, record.checkpoint))
        return record

    def update(self, job_id: str, **fields: Any) -> None:
        """Set columns of one job (`result` / `request` given as dicts)."""
        if not fields:
            return
        for key in ("result", "request"):
            if key in fields and fields[key] is not None and not isinstance(fields[key], str):
                fields[key] = json.dumps(fields[key])
        names = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {names} WHERE id = ?", (*fields.values(), job_id))  # noqa: S608

    def claim(self, job_id: str, worker: str | None = None) -> bool:
        """pending → running, atomically; False if the job is no longer pending."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET status = ?, started = ?, worker = ? WHERE id = ? AND status = ?",
                                   (RUNNING, time.time(), worker, job_id, PENDING))
            return cur.rowcount == 1

    def finish(self, job_id: str, status: str, *, error: str | None = None,
               result: dict[str, Any] | None = None) -> None:
        self.update(job_id, status=status, error=error, result=result, finished=time.time())

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def move(self, job_id: str, position: float) -> None:
        self.update(job_id, position=position)

    def recover(self) -> list[str]:
        """At start-up: jobs left `running` by a process that died are failed with the reason."""
        with self._lock, self._transaction():
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status = ?", (RUNNING,))]
            self._db.execute("UPDATE jobs SET status = ?, error = ?, finished = ? WHERE status = ?",
                             (FAILED, DIED_REASON, time.time(), RUNNING))
        return ids

    # --- reading -----------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        """The job, or None. Raises :class:`MalformedJob` for a row that cannot be read."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row_to_record(row) if row is not None else None

    def status_of(self, job_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def pending_ids(self, sources: Iterable[str] | None = None) -> list[str]:
        """Pending job ids in queue order (only those from `sources`, if given)."""
        where, args = "status = ?", [PENDING]
        if sources is not None:
            sources = list(sources)
            where += f" AND source IN ({', '.join('?' * len(sources))})"
            args += sources
        with self._lock:
            return [r[0] for r in self._db.execute(
                f"SELECT id FROM jobs WHERE {where} ORDER BY position, seq", args)]  # noqa: S608

    def list(self, statuses: Iterable[str] | None = None, *, offset: int = 0, limit: int = 100,
             newest_first: bool = False) -> tuple[list[JobRecord], int]:
        """(jobs, total) with the given statuses (all if None): queue order, or newest first.
        Malformed rows are left out of listings (they fail when they are run)."""
        where, args = "", []
        if statuses is not None:
            statuses = list(statuses)
            where = f"WHERE status IN ({', '.join('?' * len(statuses))})"
            args = statuses
        order = "COALESCE(finished, created) DESC, seq DESC" if newest_first else "position, seq"
        offset, limit = min(max(int(offset), 0), _SQLITE_MAX), min(max(int(limit), 0), _SQLITE_MAX)
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]  # noqa: S608
            rows = self._db.execute(f"SELECT * FROM jobs {where} ORDER BY {order} LIMIT ? OFFSET ?",  # noqa: S608
                                    (*args, limit, offset)).fetchall()
        out = []
        for row in rows:
            try:
                out.append(_row_to_record(row))
            except MalformedJob:
                continue
        return out, total

    def finished_beyond(self, keep: int) -> list[str]:
        """Finished jobs past the newest `keep` ones (what a history limit removes), oldest last."""
        marks = ", ".join("?" * len(FINISHED))
        with self._lock:
            return [r[0] for r in self._db.execute(
                f"SELECT id FROM jobs WHERE status IN ({marks}) ORDER BY COALESCE(finished, created) DESC, seq DESC"  # noqa: S608
                " LIMIT -1 OFFSET ?", (*FINISHED, max(0, int(keep))))]

    def ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM jobs ORDER BY seq")]

    def positions(self) -> dict[str, float]:
        """Pending job id → position."""
        with self._lock:
            return {r[0]: r[1] for r in self._db.execute("SELECT id, position FROM jobs WHERE status = ?", (PENDING,))}

    # --- meta (paused flag) ------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                             (key, value, value))

    # --- result files ------------------------------------------------------------------------
    def results_dir(self, job_id: str) -> str:
        """`results/<job id>` (job ids are generated here and checked: no path separators)."""
        if not job_id or any(c in job_id for c in "/\\\0") or job_id in (".", ".."):
            raise ValueError(f"not a job id: {job_id!r}")
        return os.path.join(self.folder, "results", job_id)

    def write_results(self, job_id: str, images: list[tuple[bytes, str]]) -> list[str]:
        """Write each (data, extension) as `NNNNN.<ext>` atomically; returns the file names."""
        folder = self.results_dir(job_id)
        os.makedirs(folder, exist_ok=True)
        names = []
        for i, (data, ext) in enumerate(images):
            name = f"{i:05d}.{ext}"
            path = os.path.join(folder, name)
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            names.append(name)
        return names

    def read_result(self, job_id: str, name: str) -> bytes:
        folder = self.results_dir(job_id)
        if os.path.basename(name) != name:
            raise ValueError(f"not a result file name: {name!r}")
        with open(os.path.join(folder, name), "rb") as f:
            return f.read()

    def remove_results(self, job_id: str) -> None:
        import shutil
        shutil.rmtree(self.results_dir(job_id), ignore_errors=True)

    # --- helpers -----------------------------------------------------------------------------
    def _transaction(self) -> Any:
        store = self

        class _Tx:
            def __enter__(self) -> None:
                store._db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, *rest: Any) -> None:
                store._db.execute("ROLLBACK" if exc_type else "COMMIT")
        return _Tx()

