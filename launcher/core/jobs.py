"""Job records: a small sqlite database of launched jobs, so status, logs, fetch and ls work from any shell.

Lives at $FTLAUNCH_HOME/jobs.db (default ~/.ftlaunch). WAL mode and a busy timeout make concurrent
launches from several shells safe; each write is one short transaction.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from ftlaunch.core import errors, paths
from ftlaunch.backends.base import JobHandle

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY,      -- ftlaunch's job name, unique
    backend         TEXT NOT NULL,
    provider_id     TEXT NOT NULL,
    spec_name       TEXT NOT NULL,
    spec_hash       TEXT NOT NULL,
    spec_json       TEXT NOT NULL,
    image           TEXT,
    output_uri      TEXT NOT NULL,
    state           TEXT NOT NULL,
    reason          TEXT,
    predicted_cost  REAL,
    actual_cost     REAL,
    handle_json     TEXT NOT NULL,
    plan_json       TEXT,
    attempts_json   TEXT,                  -- [{"attempt": N, "started_at": T, "provider_id": ...}], oldest first
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
"""
# Columns added after the first release: (name, type), added to an older database when it is opened.
ADDED_COLUMNS = (("attempts_json", "TEXT"),)


home = paths.home  # ftlaunch's own folder: $FTLAUNCH_HOME, else ~/.ftlaunch


@dataclasses.dataclass
class JobRecord:
    id: str
    backend: str
    provider_id: str
    spec_name: str
    spec_hash: str
    spec_json: str
    image: str | None
    output_uri: str
    state: str
    reason: str | None
    predicted_cost: float | None
    actual_cost: float | None
    handle_json: str
    plan_json: str | None
    created_at: float
    updated_at: float
    attempts_json: str | None = None

    @property
    def attempts(self) -> list[dict[str, Any]]:
        """The job's attempts, oldest first; a job never resumed has one (its launch)."""
        return json.loads(self.attempts_json) if self.attempts_json else [
            {"attempt": 1, "started_at": self.created_at, "provider_id": self.provider_id}]

    @property
    def handle(self) -> JobHandle:
        return JobHandle(**json.loads(self.handle_json))

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("spec_json", "handle_json", "plan_json"):
            raw = data.pop(key)
            data[key.removesuffix("_json")] = json.loads(raw) if raw else None
        data.pop("attempts_json")
        data["attempts"] = self.attempts
        return data


class JobStore:
    """The job records database. Open one per command; it is cheap."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else home() / "jobs.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Adds the columns a database made by an older ftlaunch lacks (its records keep their values)."""
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, kind in ADDED_COLUMNS:
            if name not in have:
                try:
                    with self._tx():
                        self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError as exc:  # another shell added it meanwhile
                    if "duplicate column" not in str(exc):
                        raise

    def close(self) -> None:
        self._db.close()

    def add(self, *, handle: Any, spec: Any, image: str | None, state: str,
            predicted_cost: float | None, plan_json: dict | None = None,
            attempts: list[dict[str, Any]] | None = None) -> JobRecord:
        """Records a newly submitted job; raises UserError if its name is taken by another job. `attempts`: the
        launch's tries when a failover refused some offers first (each with its backend and reason)."""
        now = time.time()
        row = dict(id=handle.job_name, backend=handle.backend, provider_id=handle.provider_id,
                   spec_name=spec.name, spec_hash=spec.digest(), spec_json=json.dumps(spec.to_json()),
                   image=image, output_uri=handle.output_uri, state=state, reason=None,
                   predicted_cost=predicted_cost, actual_cost=None,
                   handle_json=json.dumps(dataclasses.asdict(handle)),
                   plan_json=json.dumps(plan_json) if plan_json is not None else None,
                   created_at=now, updated_at=now,
                   attempts_json=json.dumps(attempts) if attempts and len(attempts) > 1 else None)
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        try:
            with self._tx():
                self._db.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", row)
        except sqlite3.IntegrityError:
            raise errors.UserError(f"a job named {handle.job_name} is already recorded.",
                                   hint="let ftlaunch name the job, or pick another name") from None
        return JobRecord(**row)

    def update(self, job_id: str, **fields: Any) -> None:
        allowed = {"state", "reason", "actual_cost", "provider_id", "handle_json", "attempts_json", "backend",
                   "output_uri"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k} = :{k}" for k in fields)
        with self._tx():
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id = :id", {**fields, "id": job_id})

    def observe(self, job_id: str, **fields: Any) -> JobRecord | None:
        """Stores a polled state (update's fields) and returns the record as it was before, if the state
        changed; None if it did not. One transaction: of two shells polling at once, one sees the change."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            fields["updated_at"] = time.time()
            sets = ", ".join(f"{k} = :{k}" for k in fields)
            db.execute(f"UPDATE jobs SET {sets} WHERE id = :id", {**fields, "id": job_id})
        before = JobRecord(**{k: row[k] for k in row.keys()})
        return before if "state" in fields and fields["state"] != before.state else None

    def add_attempt(self, record: JobRecord, handle: Any) -> dict[str, Any]:
        """Records a new attempt of the job (a resume) with its handle, and marks the job PENDING again."""
        attempts = record.attempts
        attempt = {"attempt": len(attempts) + 1, "started_at": time.time(), "provider_id": handle.provider_id}
        self.update(record.id, state="PENDING", reason=None, provider_id=handle.provider_id,
                    handle_json=json.dumps(dataclasses.asdict(handle)),
                    attempts_json=json.dumps([*attempts, attempt]))
        return attempt

    def move_attempt(self, job_id: str, handle: Any, attempts: list[dict[str, Any]]) -> None:
        """A failover after the job failed before training: the job's next attempt runs elsewhere (another
        offer, maybe another backend); the record follows it, keeping every attempt."""
        self.update(job_id, state="PENDING", reason=None, backend=handle.backend, provider_id=handle.provider_id,
                    output_uri=handle.output_uri, handle_json=json.dumps(dataclasses.asdict(handle)),
                    attempts_json=json.dumps(attempts))

    def get(self, job_id: str) -> JobRecord:
        """The job with this id, or the only job whose id starts with it; UserError otherwise (an empty id
        included: it would match every job)."""
        if not job_id.strip():
            raise errors.UserError("the job id is empty.", hint="pass a job id or a prefix of one (`ftlaunch ls`)")
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            rows = self._db.execute("SELECT * FROM jobs WHERE id LIKE ? ESCAPE '\\' ORDER BY created_at DESC",
                                    (_like_prefix(job_id),)).fetchall()
            if len(rows) > 1:
                shown = ", ".join(r["id"] for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
                raise errors.UserError(f"'{job_id}' matches {len(rows)} jobs: {shown}.",
                                       hint="give more of the id; `ftlaunch ls` lists them")
            row = rows[0] if rows else None
        if row is None:
            raise errors.UserError(f"no job '{job_id}' in {self.path}.",
                                   hint="`ftlaunch ls` lists recorded jobs (FTLAUNCH_HOME selects the records)")
        return JobRecord(**dict(row))

    def latest(self) -> JobRecord:
        row = self._db.execute("SELECT * FROM jobs ORDER BY created_at DESC LIMIT 1").fetchone()
        if row is None:
            raise errors.UserError("no jobs recorded yet.", hint="launch one: ftlaunch --cloud local SPEC")
        return JobRecord(**dict(row))

    def list(self, limit: int = 50) -> list[JobRecord]:
        rows = self._db.execute("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [JobRecord(**dict(r)) for r in rows]

    def _tx(self) -> "_Transaction":
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front so concurrent writers queue, not fail."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, tb) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

