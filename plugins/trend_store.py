"""One server's trend history in SQLite: samples derived from the replicated log in log order, so every server holds the
same rows; a gap left by a snapshot install is filled from a peer before recording goes on."""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

from cluster.commands import QUALITIES, Scalar
from cluster.state import moved

logger = logging.getLogger(__name__)

QUALITY_CODES = {quality: code for code, quality in enumerate(QUALITIES)}
PURGE_PERIOD = 60.0  # seconds of log time between retention purges
MAX_BUFFERED = 1_000_000  # samples held back while a gap waits for a peer; beyond this they are dropped (and counted)
MAX_QUEUED = 250_000  # samples offered but not yet written (about 30 MB; 5 s of a 50,000 samples/s load); beyond, see offer()
MAX_WAIT = 0.02  # seconds the Raft thread may wait at once for room in a full queue ...
WAIT_SHARE = 0.1  # ... and this share of its time while the queue stays full; then the samples are dropped (and counted)
MAX_ROWS_PER_BATCH = 50_000
WRITER_NICENESS = 10  # the writer thread yields the CPU to the Raft thread: under overload trends fall behind, not the cluster

SCHEMA = """
CREATE TABLE IF NOT EXISTS trends (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS samples (
    trend INTEGER NOT NULL, ts REAL NOT NULL, seq INTEGER NOT NULL, value, quality INTEGER NOT NULL,
    PRIMARY KEY (trend, ts, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_by_seq ON samples (seq);
CREATE TABLE IF NOT EXISTS latest (trend INTEGER PRIMARY KEY, seq INTEGER NOT NULL, ts REAL NOT NULL, value, quality INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""


# A value the log offers a trend: (trend, ts, value, quality code, deadband). Recorded always when the deadband is None
# (an interval sample), else when it moved past the deadband. A plain tuple: tens of thousands are made per second.
Candidate: TypeAlias = tuple[str, float, Scalar, int, float | None]


class Sample(NamedTuple):
    trend: str
    ts: float
    seq: int
    value: Scalar
    quality: int


class _Latest(NamedTuple):
    seq: int
    ts: float
    value: Scalar
    quality: int


_new_latest = partial(tuple.__new__, _Latest)  # skips NamedTuple's Python-level __new__


def records(latest: _Latest | None, value: Scalar, quality: int, deadband: float) -> bool:
    """Whether a change trend records `value`: its first sample, a new quality, or a change beyond the deadband."""
    return latest is None or latest.quality != quality or moved(latest.value, value, deadband)


class TrendStore:
    """Owns the SQLite file; a writer thread records what the log offers, in log order (`seq`)."""

    def __init__(self, path: Path, max_queued: int = MAX_QUEUED) -> None:
        self.path = path
        self.max_queued = max_queued
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:  # a damaged file: kept aside, and the history comes from a peer again
            aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
            logger.error("trend store %s is damaged (%s); moved to %s, history is fetched from a peer", path, exc, aside.name)
            for part in path.parent.glob(path.name + "*"):
                if "damaged" not in part.name:
                    part.rename(aside.with_name(aside.name + part.name.removeprefix(path.name)))
            self._db = self._open()
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        self.last_seq: int = meta.get("last_seq", 0)  # every command up to here is recorded
        self.gap_to: int = meta.get("gap_to", 0)  # commands (last_seq, gap_to] are recorded by a peer only: fetch them
        self._max_ts: float = meta.get("max_ts", 0.0)
        self._purged_at = self._max_ts
        self._ids: dict[str, int] = {}
        self._latest: dict[str, _Latest] = {}
        self._load_trends()
        self._retention: dict[str, float] = {}
        self._held: list[tuple[int, list[Candidate], float]] = []  # offered while a gap is open
        self._held_samples = 0
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._room = threading.Condition()  # guards the counts below; notified when the writer has written a batch
        self.queued = 0  # samples offered and not yet written (an offer without samples counts as one)
        self.dropped = 0  # samples lost: the queue stayed full, or held back too long for a gap
        self._budget, self._refilled = MAX_WAIT, time.monotonic()  # the Raft thread's time to wait for room
        self._thread = threading.Thread(target=self._run, name="trend writer", daemon=True)
        self._thread.start()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            db.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    # ---- fed from the Raft thread, in log order ----

    def offer(self, seq: int, candidates: list[Candidate], ts: float) -> None:
        """Command `seq` (stamped `ts`) was applied and offers these samples (maybe none). While the queue is full, the
        Raft thread waits for the writer (back-pressure), at most MAX_WAIT at once and WAIT_SHARE of its time: it must keep
        answering heartbeats. Then the samples are dropped and counted; this server's history lacks them (and so does a
        peer that fills a gap from it). An offer without samples only moves the recorded log position: when the queue
        is full it is skipped, as the next offer that fits moves the position past it."""
        if seq <= max(self.last_seq, self.gap_to):
            return  # a replay of what this store recorded already
        weight = len(candidates) or 1
        with self._room:
            if not self._fits(weight) and candidates:
                began = time.monotonic()
                self._budget = min(MAX_WAIT, self._budget + (began - self._refilled) * WAIT_SHARE)
                self._room.wait_for(lambda: self._fits(weight), self._budget)
                self._refilled = time.monotonic()
                self._budget -= self._refilled - began
            if not self._fits(weight):
                if candidates and not self.dropped:
                    logger.error("trend store: the writer is behind by %d samples; samples are dropped (counted in 'dropped')", self.queued)
                self.dropped += len(candidates)
                return
            self.queued += weight
        self._queue.put(("offer", (seq, candidates, ts)))

    def _fits(self, weight: int) -> bool:
        return self.queued == 0 or self.queued + weight <= self.max_queued  # one command's samples fit an empty queue

    def restored(self, seq: int) -> None:
        """The image was replaced by a snapshot taken after command `seq`: what this store lacks up to it comes from a peer."""
        self._queue.put(("restored", seq))

    def set_retention(self, retention: dict[str, float]) -> None:
        """Trend name -> seconds its samples are kept (by log time)."""
        self._queue.put(("retention", dict(retention)))

    # ---- the gap filler ----

    def gap(self) -> tuple[int, int] | None:
        """(after, upto): the commands whose samples must come from a peer, or None."""
        after, upto = self.last_seq, self.gap_to
        return (after, upto) if upto > after else None

    def fill(self, samples: list[Sample], upto: int) -> Future[None]:
        """Record a peer's samples of commands (last_seq, upto]; resolves once written."""
        done: Future[None] = Future()
        self._queue.put(("fill", (samples, upto, done)))
        return done

    def flushed(self) -> Future[None]:
        """Resolves once everything offered so far is written."""
        done: Future[None] = Future()
        self._queue.put(("flush", done))
        return done

    def close(self) -> None:
        self._queue.put(("stop", None))
        self._thread.join(timeout=10)

    # ---- the writer thread ----

    def _run(self) -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
        while True:
            items = [self._queue.get()]
            while len(items) < 10_000:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            waiting: list[Future[None]] = []
            try:
                stop = self._write(items, waiting)
            except Exception as exc:  # a full disk or a broken file must not end recording silently
                logger.exception("trend store: writing failed; retrying")
                for done in waiting:
                    done.set_exception(exc)
                continue
            finally:
                with self._room:
                    self.queued -= sum(len(payload[1]) or 1 for kind, payload in items if kind == "offer")
                    self._room.notify_all()
            for done in waiting:
                done.set_result(None)
            if stop:
                self._db.close()
                return

    def _write(self, items: list[tuple[str, Any]], waiting: list[Future[None]]) -> bool:
        rows: list[tuple] = []
        stop = False
        self._db.execute("BEGIN")
        try:
            for kind, payload in items:
                if kind == "offer":
                    self._offered(*payload, rows)
                elif kind == "restored":
                    self._restored(payload)
                elif kind == "fill":
                    samples, upto, done = payload
                    self._filled(samples, upto, rows)
                    waiting.append(done)
                elif kind == "retention":
                    self._retention = payload
                elif kind == "flush":
                    waiting.append(payload)
                else:
                    stop = True
                if len(rows) >= MAX_ROWS_PER_BATCH:
                    self._flush_rows(rows)
            self._flush_rows(rows)
            self._purge()
            self._db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", (("last_seq", self.last_seq), ("gap_to", self.gap_to), ("max_ts", self._max_ts))
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            self._reload(max((payload[0] for kind, payload in items if kind == "offer"), default=0))
            raise
        return stop

    def _reload(self, lost: int) -> None:
        """After a failed transaction: back to what the file holds; the commands offered up to `lost` come from a peer."""
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        self.last_seq, self.gap_to = meta.get("last_seq", 0), max(meta.get("gap_to", 0), lost)
        self._load_trends()

    def _load_trends(self) -> None:
        self._ids = {name: id_ for id_, name in self._db.execute("SELECT id, name FROM trends")}
        names = {id_: name for name, id_ in self._ids.items()}
        self._latest = {names[row[0]]: _Latest(*row[1:]) for row in self._db.execute("SELECT * FROM latest")}

    def _offered(self, seq: int, candidates: list[Candidate], ts: float, rows: list[tuple]) -> None:
        if seq <= max(self.last_seq, self.gap_to):
            return  # recorded already (a replay after a restart), or the peer's samples cover it
        if self.gap_to > self.last_seq:
            if self._held_samples + len(candidates) > MAX_BUFFERED:
                logger.error("trend store: no peer filled the gap up to %d; samples of command %d are lost", self.gap_to, seq)
                with self._room:
                    self.dropped += len(candidates)
            else:
                self._held.append((seq, candidates, ts))
                self._held_samples += len(candidates)
            return
        self._record(seq, candidates, ts, rows)

    def _record(self, seq: int, candidates: list[Candidate], ts: float, rows: list[tuple]) -> None:
        latest, ids = self._latest, self._ids
        for trend, sample_ts, value, quality, deadband in candidates:
            last = latest.get(trend)
            if deadband is not None and not records(last, value, quality, deadband):
                continue
            if last is None or (seq, sample_ts) >= (last[0], last[1]):
                latest[trend] = _new_latest((seq, sample_ts, value, quality))
            rows.append((ids.get(trend) or self._id(trend), sample_ts, seq, value, quality))
        self.last_seq = seq
        self._max_ts = max(self._max_ts, ts)

    def _restored(self, seq: int) -> None:
        if seq <= self.last_seq:
            return  # this store is ahead of the snapshot: the replay that follows is skipped up to last_seq
        self.gap_to = max(self.gap_to, seq)
        self._held = [held for held in self._held if held[0] > self.gap_to]
        self._held_samples = sum(len(held[1]) for held in self._held)
        logger.info("trend store: samples of commands %d..%d are to come from a peer", self.last_seq + 1, self.gap_to)

    def _filled(self, samples: list[Sample], upto: int, rows: list[tuple]) -> None:
        if upto <= self.last_seq:
            return
        for trend, ts, seq, value, quality in samples:
            if seq <= self.last_seq:
                continue
            last = self._latest.get(trend)
            if last is None or (seq, ts) >= (last.seq, last.ts):
                self._latest[trend] = _Latest(seq, ts, value, quality)
            rows.append((self._id(trend), ts, seq, value, quality))
            self._max_ts = max(self._max_ts, ts)
        self.last_seq = upto
        if self.last_seq >= self.gap_to:
            held, self._held, self._held_samples = self._held, [], 0
            logger.info("trend store: gap filled up to %d; recording %d held commands", upto, len(held))
            for seq, candidates, ts in held:
                self._offered(seq, candidates, ts, rows)

    def _id(self, trend: str) -> int:
        id_ = self._ids.get(trend)
        if id_ is None:
            id_ = self._ids[trend] = self._db.execute("INSERT INTO trends (name) VALUES (?)", (trend,)).lastrowid
        return id_

    def _flush_rows(self, rows: list[tuple]) -> None:
        if rows:
            self._db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?)", rows)
            touched = {row[0] for row in rows}
            self._db.executemany(
                "INSERT OR REPLACE INTO latest VALUES (?, ?, ?, ?, ?)",
                ((self._ids[trend], *last) for trend, last in self._latest.items() if self._ids[trend] in touched),
            )
            rows.clear()

    def _purge(self) -> None:
        """Drop samples older than their trend's retention, measured back from the newest log time recorded."""
        if self._max_ts - self._purged_at < PURGE_PERIOD:
            return
        self._purged_at = self._max_ts
        self._db.executemany(
            "DELETE FROM samples WHERE trend = ? AND ts < ?",
            ((self._ids[trend], self._max_ts - keep) for trend, keep in self._retention.items() if trend in self._ids),
        )

    # ---- reading (any thread; each call its own connection) ----

    def _reader(self) -> sqlite3.Connection:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        db.execute("BEGIN")  # one snapshot of the file for the whole read
        return db

    def samples_between(self, after: int, upto: int, limit: int = MAX_ROWS_PER_BATCH) -> tuple[list[Sample], int]:
        """The samples of commands (after, min(upto, last_seq)] for a peer filling its gap: at most about `limit` rows,
        always whole commands; and the last command they cover."""
        db = self._reader()
        try:
            last_seq = dict(db.execute("SELECT key, value FROM meta")).get("last_seq", 0)
            upto = min(upto, last_seq)
            query = "SELECT t.name, s.ts, s.seq, s.value, s.quality FROM samples s JOIN trends t ON t.id = s.trend WHERE s.seq > ? AND s.seq <= ? ORDER BY s.seq"
            rows = db.execute(query + " LIMIT ?", (after, upto, limit + 1)).fetchall()
            if len(rows) > limit:  # the limit split a command: send whole commands only
                cut = rows[-1][2]
                if rows[0][2] == cut:  # one command alone is over the limit: send it whole
                    rows, upto = db.execute(query, (after, cut)).fetchall(), cut
                else:
                    rows, upto = [row for row in rows if row[2] < cut], cut - 1
            return [Sample(*row) for row in rows], upto
        finally:
            db.close()

    def history(self, trend: str, start: float, end: float, limit: int) -> list[tuple[float, Scalar, str]]:
        """Raw samples of `trend` in [start, end), oldest first: (ts, value, quality)."""
        db = self._reader()
        try:
            rows = db.execute(
                "SELECT s.ts, s.value, s.quality FROM samples s JOIN trends t ON t.id = s.trend "
                "WHERE t.name = ? AND s.ts >= ? AND s.ts < ? ORDER BY s.ts, s.seq LIMIT ?",
                (trend, start, end, limit),
            ).fetchall()
        finally:
            db.close()
        return [(ts, value, QUALITIES[quality]) for ts, value, quality in rows]

    def buckets(self, trend: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Numeric samples of `trend` in [start, end) downsampled to buckets of `step` seconds: min, max, avg, count."""
        db = self._reader()
        try:
            rows = db.execute(
                "SELECT CAST((s.ts - ?) / ? AS INTEGER) AS bucket, MIN(s.value), MAX(s.value), AVG(s.value), COUNT(*) "
                "FROM samples s JOIN trends t ON t.id = s.trend "
                "WHERE t.name = ? AND s.ts >= ? AND s.ts < ? AND typeof(s.value) IN ('integer', 'real') GROUP BY bucket ORDER BY bucket",
                (start, step, trend, start, end),
            ).fetchall()
        finally:
            db.close()
        return [{"ts": start + bucket * step, "min": low, "max": high, "avg": avg, "count": count} for bucket, low, high, avg, count in rows]

    def latest(self) -> dict[str, dict[str, Any]]:
        """Trend name -> its newest sample (in log order): ts, value, quality."""
        db = self._reader()
        try:
            rows = db.execute("SELECT t.name, l.ts, l.value, l.quality FROM latest l JOIN trends t ON t.id = l.trend").fetchall()
        finally:
            db.close()
        return {name: {"ts": ts, "value": value, "quality": QUALITIES[quality]} for name, ts, value, quality in rows}

    def oldest(self) -> dict[str, float]:
        """Trend name -> the time of its oldest sample (one index look-up per trend)."""
        db = self._reader()
        try:
            rows = db.execute("SELECT t.name, (SELECT MIN(s.ts) FROM samples s WHERE s.trend = t.id) AS first FROM trends t").fetchall()
        finally:
            db.close()
        return {name: first for name, first in rows if first is not None}

    def status(self) -> dict[str, Any]:
        gap = self.gap()
        return {
            "last_seq": self.last_seq,
            "gap": None if gap is None else {"after": gap[0], "upto": gap[1]},
            "held_samples": self._held_samples,
            "queued": self.queued,
            "queue_bound": self.max_queued,
            "dropped": self.dropped,
            "bytes": sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*")),
        }
