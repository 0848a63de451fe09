"""Job state in SQLite (WAL mode) under the jobs directory: no server to start, and a `kill -9` loses
nothing committed. One row per job and one per item; an item's result row is committed in the same
transaction as the job's counters, after its files were written (atomically), so a restart finds
every finished item finished exactly once and runs only the rest.

WAL with `synchronous=NORMAL` survives the process dying at any instruction (the case a crashed or
killed server is); a power cut may lose the last transactions, which then run again on restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT UNIQUE,
    request_digest TEXT
);
CREATE TABLE IF NOT EXISTS items (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    source TEXT NOT NULL,
    label TEXT,
    state TEXT NOT NULL DEFAULT 'queued',
    result TEXT,
    error TEXT,
    seconds REAL,
    finished REAL,
    PRIMARY KEY (job_id, n)
);
CREATE INDEX IF NOT EXISTS items_by_state ON items (job_id, state, n);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created);
"""


@dataclass(frozen=True)
class JobRow:
    id: str
    kind: str
    spec: dict[str, Any]
    state: str
    created: float
    started: float | None
    finished: float | None
    total: int
    done: int
    failed: int
    error: str | None
    bytes: int


@dataclass(frozen=True)
class ItemRow:
    n: int
    source: str
    label: str | None
    state: str  # queued, succeeded, failed
    result: dict[str, Any] | None
    error: str | None
    seconds: float | None
    finished: float | None


@dataclass(frozen=True)
class NewItem:
    source: str  # the item's path: under the data root, or under the job's input folder
    label: str | None = None


@dataclass(frozen=True)
class FinishedItem:
    n: int
    result: dict[str, Any] | None
    error: str | None
    seconds: float
    bytes: int = 0  # bytes of the files written for it


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # Submitting.

    def create(
        self,
        job_id: str,
        kind: str,
        spec: dict[str, Any],
        items: Sequence[NewItem],
        bytes_: int,
        idempotency_key: str | None = None,
        request_digest: str | None = None,
    ) -> JobRow:
        """The job and all its items, in one transaction."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, kind, spec, state, created, total, bytes, idempotency_key, request_digest) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (job_id, kind, json.dumps(spec), time.time(), len(items), bytes_, idempotency_key, request_digest),
            )
            db.executemany(
                "INSERT INTO items (job_id, n, source, label) VALUES (?, ?, ?, ?)",
                [(job_id, n, item.source, item.label) for n, item in enumerate(items)],
            )
        job = self.get(job_id)
        assert job is not None
        return job

    def by_idempotency_key(self, key: str) -> tuple[JobRow, str | None] | None:
        rows = self._query("SELECT id, request_digest FROM jobs WHERE idempotency_key = ?", (key,))
        if not rows:
            return None
        job = self.get(rows[0][0])
        return None if job is None else (job, rows[0][1])

    # Reading.

    _JOB_COLUMNS = "id, kind, spec, state, created, started, finished, total, done, failed, error, bytes"

    @staticmethod
    def _job(row: tuple[Any, ...]) -> JobRow:
        return JobRow(row[0], row[1], json.loads(row[2]), *row[3:])

    def get(self, job_id: str) -> JobRow | None:
        rows = self._query(f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return self._job(rows[0]) if rows else None

    def listed(self, state: str | None = None, limit: int = 100) -> list[JobRow]:
        if state is None:
            rows = self._query(f"SELECT {self._JOB_COLUMNS} FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
        else:
            rows = self._query(
                f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE state = ? ORDER BY created DESC LIMIT ?", (state, limit)
            )
        return [self._job(row) for row in rows]

    def next_queued(self) -> JobRow | None:
        rows = self._query(f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1")
        return self._job(rows[0]) if rows else None

    def items(self, job_id: str, state: str | None = None, limit: int | None = None) -> list[ItemRow]:
        sql = "SELECT n, source, label, state, result, error, seconds, finished FROM items WHERE job_id = ?"
        args: list[Any] = [job_id]
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        sql += " ORDER BY n"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            ItemRow(row[0], row[1], row[2], row[3], None if row[4] is None else json.loads(row[4]), *row[5:])
            for row in self._query(sql, args)
        ]

    def item(self, job_id: str, n: int) -> ItemRow | None:
        rows = self._query(
            "SELECT n, source, label, state, result, error, seconds, finished FROM items WHERE job_id = ? AND n = ?",
            (job_id, n),
        )
        if not rows:
            return None
        row = rows[0]
        return ItemRow(row[0], row[1], row[2], row[3], None if row[4] is None else json.loads(row[4]), *row[5:])

    def counts(self) -> dict[str, int]:
        found = dict(self._query("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        return {state: int(found.get(state, 0)) for state in STATES}

    def queued_items(self) -> int:
        rows = self._query(
            "SELECT COUNT(*) FROM items JOIN jobs ON items.job_id = jobs.id "
            "WHERE items.state = 'queued' AND jobs.state IN ('queued', 'running')"
        )
        return int(rows[0][0])

    def total_bytes(self) -> int:
        return int(self._query("SELECT COALESCE(SUM(bytes), 0) FROM jobs")[0][0])

    # Running.

    def start(self, job_id: str) -> bool:
        """queued -> running; False when it is no longer queued (cancelled meanwhile)."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET state = 'running', started = COALESCE(started, ?) WHERE id = ? AND state = 'queued'",
                (time.time(), job_id),
            ).rowcount
        return changed == 1

    def finish_items(self, job_id: str, finished: Sequence[FinishedItem]) -> None:
        """Items' results and the job's counters, in one transaction; an item already finished is
        left as it is (never counted twice)."""
        now = time.time()
        with self._transaction() as db:
            marks = ", ".join("?" * len(finished))
            queued = {
                n
                for (n,) in db.execute(
                    f"SELECT n FROM items WHERE job_id = ? AND state = 'queued' AND n IN ({marks})",  # noqa: S608
                    (job_id, *(item.n for item in finished)),
                )
            }
            fresh = [item for item in finished if item.n in queued]
            db.executemany(
                "UPDATE items SET state = ?, result = ?, error = ?, seconds = ?, finished = ? "
                "WHERE job_id = ? AND n = ?",
                [
                    (
                        "failed" if item.error else "succeeded",
                        None if item.result is None else json.dumps(item.result),
                        item.error,
                        item.seconds,
                        now,
                        job_id,
                        item.n,
                    )
                    for item in fresh
                ],
            )
            failed = sum(1 for item in fresh if item.error)
            db.execute(
                "UPDATE jobs SET done = done + ?, failed = failed + ?, bytes = bytes + ? WHERE id = ?",
                (len(fresh) - failed, failed, sum(item.bytes for item in fresh), job_id),
            )

    def add_bytes(self, job_id: str, count: int) -> None:
        """Bytes a job wrote beside its items' rows (an index job's parts), counted in its budget."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET bytes = bytes + ? WHERE id = ?", (count, job_id))

    def end(self, job_id: str, state: str, error: str | None = None) -> None:
        """A running job ends (a cancelled one stays cancelled)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, error = ?, finished = ? WHERE id = ? AND state = 'running'",
                (state, error, time.time(), job_id),
            )

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job: its queued items are withdrawn at once. False when it had
        already ended."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ? AND state IN ('queued', 'running')",
                (time.time(), job_id),
            ).rowcount
            if changed:
                db.execute("UPDATE items SET state = 'cancelled' WHERE job_id = ? AND state = 'queued'", (job_id,))
        return changed == 1

    def requeue_running(self) -> list[str]:
        """After a restart: jobs that were running go back to the queue, their finished items kept."""
        with self._transaction() as db:
            ids = [row[0] for row in db.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall()]
            db.execute("UPDATE jobs SET state = 'queued' WHERE state = 'running'")
        return ids

    def expired(self, before: float) -> list[str]:
        rows = self._query(
            "SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished < ?", (before,)
        )
        return [row[0] for row in rows]

    def delete(self, job_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM items WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def ids(self) -> set[str]:
        return {row[0] for row in self._query("SELECT id FROM jobs")}
