"""Mail notifications on real node processes, the active killed (SIGKILL) while the SMTP server holds its transaction open:
the new active sends every event, the server accepts one message per event, and a repeat carries the same Message-ID."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import apply_building
from test_alarm_failover import alarms, journal, put
from test_mail import BUILDING, Inbox, smtp_server

from webmanager.tools.launcher import LocalCluster, holds_for, wait_for


class HoldingInbox(Inbox):
    """Holds the first SMTP transaction until `release` is set: at "RCPT" (before the server has the message) or at "DATA"
    (the server has the message, the client has not had its answer yet)."""

    def __init__(self, at: str) -> None:
        super().__init__()
        self.at = at
        self.held = threading.Event()
        self.release = threading.Event()

    async def _hold(self, stage: str) -> None:
        if stage == self.at and not self.held.is_set():
            self.held.set()
            await asyncio.to_thread(self.release.wait, 30)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:  # noqa: N802
        await self._hold("RCPT")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        answer = await super().handle_DATA(server, session, envelope)
        await self._hold("DATA")
        return answer

    def message_ids(self) -> Counter[str]:
        return Counter(message["Message-ID"] for message in self.messages())


def killed_in_the_middle_of_a_send(make_cluster: Any, inbox: HoldingInbox, port: int, tmp_path: Path) -> LocalCluster:
    """Main raises an alarm and is killed while its mail is held; then the server goes on and the backup is active."""
    cluster = make_cluster(failback="manual")
    applied = apply_building(cluster, BUILDING.format(port=port, keys='security = "none"\ntimeout = 30'), tmp_path)
    assert applied.returncode == 0, applied.stderr
    wait_for(lambda: alarms(cluster, "backup")["notifiers"]["ops"]["delivered"] is not None, 10, "the notifier to start")
    put(cluster, 30.0, tmp_path)
    wait_for(inbox.held.is_set, 10, f"main's mail held at {inbox.at}")
    cluster["main"].kill()
    inbox.release.set()
    assert cluster.wait_active(5) == "backup"
    return cluster


def test_a_mail_cut_off_by_the_death_of_the_active_is_sent_once_by_the_new_active(make_cluster, tmp_path):
    inbox = HoldingInbox("RCPT")
    with smtp_server(inbox) as server:
        cluster = killed_in_the_middle_of_a_send(make_cluster, inbox, server.port, tmp_path)
        wait_for(lambda: inbox.envelopes, 15, "the backup sending the raise again")
        put(cluster, 20.0, tmp_path)  # returned: an event the backup sends as the active
        wait_for(lambda: len(inbox.envelopes) == 2 and alarms(cluster, "backup")["notifiers"]["ops"]["behind"] == 0, 15, "the return sent")
        holds_for(lambda: len(inbox.envelopes) == 2, 1.0, "no message accepted twice")
    assert [sent["Subject"] for sent in inbox.messages()] == ["[10] room-hot raised", "[10] room-hot returned"]
    assert [e["event"] for e in journal(cluster, "backup")] == ["raised", "returned"]
    assert sorted(inbox.message_ids().values()) == [1, 1]  # one message per event, none lost


def test_a_mail_the_server_took_just_before_the_active_died_comes_again_with_the_same_message_id(make_cluster, tmp_path):
    inbox = HoldingInbox("DATA")
    with smtp_server(inbox) as server:
        cluster = killed_in_the_middle_of_a_send(make_cluster, inbox, server.port, tmp_path)
        wait_for(lambda: alarms(cluster, "backup")["notifiers"]["ops"]["behind"] == 0, 15, "the backup sending the raise again")
        holds_for(lambda: len(inbox.envelopes) == 2, 1.0, "the raise accepted twice, not more")
    first, again = inbox.envelopes
    assert first.content == again.content  # the same message, byte for byte
    [(message_id, count)] = inbox.message_ids().items()
    assert count == 2 and message_id.startswith("<alarm-1.")
