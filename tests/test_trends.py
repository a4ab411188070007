"""Trend samples derived from a real process image's commands into real SQLite stores: deadband and interval sampling,
restarts and replays, gap filling from a peer, the writer's bounded queue, retention, queries, and validation of
[[trends]] entries."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import changes
from cluster.commands import PointUpdate, PutDocument, Step, UpdatePoints
from cluster.state import ProcessImage
from plugins.building import BuildingError, validate_building
from plugins.manager import load_plugins
from plugins.trend_store import MAX_QUEUED, MAX_WAIT, WAIT_SHARE, TrendStore
from plugins.trends import FUNCTION, MAX_CATCHUP, TICK, TrendEntry, TrendFeed, due_tick, find_trend

T0 = 1_800_000_000.0  # a whole multiple of 60


class Server:
    """One server's side of trending: a process image applying commands, its feed and its store."""

    def __init__(self, directory: Path, max_queued: int = MAX_QUEUED) -> None:
        self.image = ProcessImage()
        self.store = TrendStore(directory / "trends.sqlite", max_queued)
        self.feed = TrendFeed(lambda: self.image, self.store)

    def offer(self, *commands) -> None:
        for command in commands:
            result = self.image.apply(command)
            self.feed(changes.applied(command, result, self.image))

    def apply(self, *commands) -> None:
        self.offer(*commands)
        self.store.flushed().result(timeout=10)

    def rows(self) -> list[tuple]:
        with sqlite3.connect(self.store.path) as db:
            return db.execute(
                "SELECT t.name, s.ts, s.seq, s.value, s.quality FROM samples s JOIN trends t ON t.id = s.trend ORDER BY t.name, s.ts, s.seq"
            ).fetchall()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    made = Server(tmp_path / "a")
    yield made
    made.store.close()


def trend(name: str, **body) -> PutDocument:
    return PutDocument(FUNCTION, name, TrendEntry(**body).model_dump(), "eve", T0)


def update(ts: float, **values) -> UpdatePoints:
    return UpdatePoints(tuple(PointUpdate(name.replace("_", "."), value, "good", ts, "test") for name, value in values.items()))


def test_a_change_trend_records_moves_beyond_its_deadband_and_every_quality_change(server):
    server.apply(trend("temp", point="room.temp", deadband=0.5))
    for i, value in enumerate([20.0, 20.3, 20.6, 20.2, 21.2, 21.2]):
        server.apply(update(T0 + i, room_temp=value))
    server.apply(UpdatePoints((PointUpdate("room.temp", None, "comm-failure", T0 + 9, "test"),)))
    assert [(ts - T0, value) for _, ts, _, value, _ in server.rows()] == [(0, 20.0), (2, 20.6), (4, 21.2), (9, None)]
    assert server.store.history("temp", T0, T0 + 60, 10)[-1] == (T0 + 9, None, "comm-failure")


def test_interval_ticks_sample_every_boundary_even_without_changes_and_catch_up_a_bounded_gap(server):
    server.apply(trend("minute", point="meter", mode="interval", interval=60), update(T0 - 30, meter=7))
    first = due_tick({60}, T0 + 0.01, None)
    server.apply(Step(FUNCTION, None, T0 + 0.01, changes=((TICK, None, first),)))
    assert due_tick({60}, T0 + 30, first["at"]) is None  # no boundary passed
    second = due_tick({60}, T0 + 180.5, first["at"])  # two ticks missed: a failover gap
    server.apply(Step(FUNCTION, None, T0 + 180.5, changes=((TICK, first, second),)))
    assert [(ts - T0, value) for _, ts, _, value, _ in server.rows()] == [(0, 7), (60, 7), (120, 7), (180, 7)]
    outage = due_tick({60}, T0 + 10_000, second["at"])
    assert outage["from"] == outage["at"] - MAX_CATCHUP  # no active for hours: only the last MAX_CATCHUP seconds are filled


def test_a_restarted_store_skips_what_it_recorded_and_goes_on_like_one_that_never_stopped(tmp_path):
    steady, restarted = Server(tmp_path / "a"), Server(tmp_path / "b")
    commands = [trend("temp", point="room.temp", deadband=0.5)] + [update(T0 + i, room_temp=20 + (i % 7) * 0.4) for i in range(40)]
    steady.apply(*commands)
    restarted.apply(*commands[:25])
    restarted.store.close()
    again = TrendStore(restarted.store.path)
    restarted.store, restarted.feed = again, TrendFeed(lambda: restarted.image, again)
    restarted.image = ProcessImage()  # a process restart replays the log from the start (no snapshot here)
    restarted.apply(*commands)
    assert restarted.rows() == steady.rows() and len(steady.rows()) > 10
    steady.store.close(), again.close()


def test_a_snapshot_gap_is_filled_from_a_peer_and_what_came_meanwhile_is_recorded_after_it(tmp_path):
    peer, wiped = Server(tmp_path / "peer"), Server(tmp_path / "wiped")
    commands = [trend("temp", point="room.temp", deadband=0.5)] + [update(T0 + i, room_temp=20 + (i % 5) * 0.3) for i in range(60)]
    peer.apply(*commands)
    snapshot = ProcessImage.decode(ProcessImage.encode(_image_after(commands[:40]).freeze()))
    wiped.image = snapshot
    wiped.feed(changes.restored(snapshot.applied))  # installed a snapshot taken after command 40
    wiped.apply(*commands[40:])  # held back: their deadband depends on samples in the gap
    assert wiped.store.gap() == (0, 40) and wiped.rows() == []
    after, upto = wiped.store.gap()
    samples, covered = peer.store.samples_between(after, upto, limit=3)  # pages of whole commands
    assert covered < 40 and {s.seq for s in samples} <= set(range(1, covered + 1))
    wiped.store.fill(samples, covered).result(timeout=10)
    while (gap := wiped.store.gap()) is not None:
        wiped.store.fill(*peer.store.samples_between(*gap)).result(timeout=10)
    wiped.store.flushed().result(timeout=10)
    assert wiped.rows() == peer.rows()
    peer.store.close(), wiped.store.close()


def _image_after(commands) -> ProcessImage:
    image = ProcessImage()
    for command in commands:
        image.apply(command)
    return image


def test_a_stalled_writer_holds_the_raft_thread_briefly_then_drops_what_does_not_fit_and_counts_it(tmp_path):
    """Another connection holds the file's write lock (a stalled disk): the queue fills to its bound and no further; each
    offer beyond it returns within the wait budget, its samples dropped and counted; once the lock is gone, the samples
    the queue took are written."""
    server = Server(tmp_path, max_queued=1_000)
    server.apply(trend("temp", point="room.temp"))
    batches = [UpdatePoints(tuple(PointUpdate("room.temp", float(k * 100 + i), "good", T0 + k + i / 100, "test") for i in range(100))) for k in range(30)]
    stall = sqlite3.connect(server.store.path, isolation_level=None)
    stall.execute("BEGIN IMMEDIATE")
    waited, started = [], time.monotonic()
    try:
        for batch in batches:
            before = time.monotonic()
            server.offer(batch)
            waited.append(time.monotonic() - before)
            assert server.store.queued <= 1_000
        elapsed = time.monotonic() - started
        status = server.store.status()
    finally:
        stall.rollback()
    assert (status["queued"], status["queue_bound"], status["dropped"]) == (1_000, 1_000, 2_000)  # 10 batches fit, 20 do not
    assert max(waited) < MAX_WAIT + 0.2 and sum(waited) < MAX_WAIT + WAIT_SHARE * elapsed + 0.2  # slack: 2 busy cores
    server.store.flushed().result(timeout=30)
    assert [value for *_, value, _ in server.rows()] == [float(v) for v in range(1_000)]  # the first 10 batches, whole
    assert (server.store.queued, server.store.dropped) == (0, 2_000)
    server.apply(UpdatePoints(tuple(PointUpdate("room.temp", -float(i), "good", T0 + 60 + i, "test") for i in range(1_500))))
    assert len(server.rows()) == 2_500 and server.store.dropped == 2_000  # one command bigger than the bound fits an empty queue
    server.store.close()


def test_retention_drops_samples_older_than_the_trends_keep_by_log_time(server):
    server.apply(trend("short", point="a", retention=1 / 24), trend("long", point="b"))  # one hour; a year
    server.apply(update(T0, a=1, b=1), update(T0 + 2 * 3600, a=2, b=2))
    assert [(name, value) for name, _, _, value, _ in server.rows()] == [("long", 1), ("long", 2), ("short", 2)]
    assert server.store.oldest() == {"long": T0, "short": T0 + 2 * 3600}  # what the Trends page's default range starts at


def test_buckets_give_min_max_avg_and_count_of_numeric_samples(server):
    server.apply(trend("temp", point="t"))
    server.apply(*(update(T0 + i * 10, t=float(i)) for i in range(12)))  # 0..11, one every 10 s
    buckets = server.store.buckets("temp", T0, T0 + 120, 60)
    assert buckets == [
        {"ts": T0, "min": 0.0, "max": 5.0, "avg": 2.5, "count": 6},
        {"ts": T0 + 60, "min": 6.0, "max": 11.0, "avg": 8.5, "count": 6},
    ]
    assert [value for _, value, _ in server.store.history("temp", T0 + 30, T0 + 60, 100)] == [3.0, 4.0, 5.0]


def test_find_trend_by_name_or_by_the_point_of_its_only_trend(server):
    server.apply(trend("t1", point="a"), trend("t2", point="b"), trend("t3", point="b", mode="interval", interval=5))
    assert find_trend(server.image, "t1") == "t1"
    assert find_trend(server.image, "a") == "t1"
    assert find_trend(server.image, "b") is None  # two trends: ambiguous


def test_trend_entries_are_validated_with_located_errors():
    plugins = load_plugins(None)
    building = {
        "points": [{"name": "p"}],
        "trends": [
            {"name": "ok", "point": "p", "mode": "interval", "interval": 60},
            {"name": "no-interval", "point": "p", "mode": "interval"},
            {"name": "ghost", "point": "q"},
            {"name": "bad", "point": "p", "deadband": -1, "retention": 0},
        ],
    }
    with pytest.raises(BuildingError) as raised:
        validate_building(building, plugins)
    problems = "\n".join(raised.value.problems)
    assert "trends[1]: Value error, an interval trend needs interval (seconds)" in problems
    assert "trends[2].point: Value error, point 'q' is not in [[points]]" in problems
    assert "trends[3].deadband" in problems and "trends[3].retention" in problems
    assert "trends[0]" not in problems


def test_a_damaged_store_is_kept_aside_and_its_history_refetched(tmp_path):
    damaged = tmp_path / "trends.sqlite"
    damaged.write_bytes(b"not a database" * 100)
    server = Server(tmp_path)
    try:
        assert server.store.last_seq == 0 and server.store.gap() is None
        server.feed(changes.restored(7))  # the node restores its snapshot after command 7
        server.store.flushed().result(timeout=10)
        assert server.store.gap() == (0, 7)  # what the damaged file held comes from a peer
        assert [p.read_bytes()[:14] for p in tmp_path.glob("trends.sqlite.damaged-*")] == [b"not a database"]
    finally:
        server.store.close()
