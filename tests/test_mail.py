"""The mail notifier against a real SMTP server (aiosmtpd): STARTTLS with a login, implicit TLS checked against a CA file,
the same message when an event is sent again, a wrong password retried on a real cluster, and located validation errors."""

from __future__ import annotations

import email
import email.policy
import json
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword
from conftest import apply_building, self_signed
from test_alarm_failover import alarms, put

from plugins.building import BuildingError, validate_building
from plugins.mail import Mail, MailSettings, message
from plugins.manager import load_plugins
from plugins.simulator.process import free_ports
from webmanager.tools.launcher import wait_for

EVENT = {
    "id": 7, "ts": 1718000000.25, "alarm": "room-hot", "event": "raised", "state": "active-unacked", "point": "room.temp",
    "priority": 10, "class": "comfort", "message": "room too warm", "value": 30.5,
}
SENDER, TO = "tandem@site.example", ["ops@site.example", "facility@site.example"]

BUILDING = """
[[points]]
name = "room.temp"
writable = true

[[notifiers]]
name = "ops"
notifier = "mail"
host = "127.0.0.1"
port = {port}
from = "tandem@site.example"
to = ["ops@site.example"]
events = ["raised", "returned"]
{keys}

[[alarms]]
name = "room-hot"
point = "room.temp"
type = "high"
limit = 25.0
priority = 10
"""


class Inbox:
    """An aiosmtpd handler that keeps the envelope of every message it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's name
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        return [email.message_from_bytes(envelope.content, policy=email.policy.default) for envelope in self.envelopes]  # type: ignore[arg-type]


@contextmanager
def smtp_server(handler: object, **options: Any) -> Iterator[Controller]:
    """A real SMTP server on a free loopback port, in its own thread; `options` go to aiosmtpd's SMTP."""
    controller = Controller(handler, hostname="127.0.0.1", port=free_ports(1)[0], **options)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def login(user: str, password: str) -> Callable[..., AuthResult]:
    """An aiosmtpd authenticator that accepts one user and password."""

    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        return AuthResult(success=data == LoginPassword(user.encode(), password.encode()), handled=False)

    return check


def settings(port: int, **keys: Any) -> MailSettings:
    return MailSettings.model_validate({"host": "127.0.0.1", "port": port, "from": SENDER, "to": TO, **keys})


async def test_a_mail_goes_out_over_starttls_after_a_login_and_is_the_same_message_when_sent_again(tmp_path):
    cert, key = self_signed(tmp_path)
    (tmp_path / "password").write_text("s3cret pass\n")
    inbox = Inbox()
    options = {"tls_context": server_tls(cert, key), "require_starttls": True, "auth_required": True, "authenticator": login("tandem", "s3cret pass")}
    with smtp_server(inbox, **options) as server:
        mail = Mail(settings(server.port, username="tandem", password_file=str(tmp_path / "password"), cafile=cert))
        await mail.send(EVENT)
        await mail.send(EVENT)  # as a new active does after a failover
    first, again = inbox.envelopes
    assert (first.mail_from, first.rcpt_tos) == (SENDER, TO)
    assert first.content == again.content  # byte for byte: the receiver can drop the repeat by its Message-ID
    sent = inbox.messages()[0]
    assert sent["Message-ID"] == "<alarm-7.1718000000250@site.example>"
    assert (sent["From"], sent["To"], sent["Subject"]) == (SENDER, ", ".join(TO), "[10] room-hot raised")
    body = sent.get_content()
    summary = ["alarm:    room-hot", "event:    raised", "value:    30.5", "priority: 10", "class:    comfort", "message:  room too warm"]
    assert {*summary, "time:     2024-06-10T06:13:20.250+00:00"} <= set(body.splitlines())
    assert json.loads(body[body.index("{"):]) == EVENT


async def test_implicit_tls_checks_the_servers_certificate_against_cafile(tmp_path):
    cert, key = self_signed(tmp_path)
    inbox = Inbox()
    with smtp_server(inbox, ssl_context=server_tls(cert, key)) as server:
        with pytest.raises(aiosmtplib.SMTPConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await Mail(settings(server.port, security="tls")).send(EVENT)
        await Mail(settings(server.port, security="tls", cafile=cert)).send(EVENT)
    assert [sent["Subject"] for sent in inbox.messages()] == ["[10] room-hot raised"]


def test_any_event_makes_a_one_line_subject_and_a_summary_of_what_it_has():
    acked = {"id": 9, "ts": 1718000060.0, "alarm": "room-hot", "event": "acked", "state": "active-acked", "user": "alice", "comment": "window\nopen"}
    sent = message(settings(25, subject="{event} by {user}: {comment} [{priority}] {{{alarm}}} at {time}"), acked)
    assert sent["Subject"] == "acked by alice: window open [] {room-hot} at 2024-06-10T06:14:20.000+00:00"
    assert "user:     alice\ncomment:  window\nopen\n" in sent.get_content() and "priority" not in sent.get_content()


def test_a_wrong_password_is_logged_clearly_and_retried_until_the_password_file_is_fixed(make_cluster, tmp_path):
    cert, key = self_signed(tmp_path)
    password = tmp_path / "smtp-password"
    password.write_text("wrong-9f2c\n")
    inbox = Inbox()
    options = {"tls_context": server_tls(cert, key), "require_starttls": True, "auth_required": True, "authenticator": login("tandem", "right-4e7a")}
    with smtp_server(inbox, **options) as server:
        cluster = make_cluster(failback="manual")
        keys = f'username = "tandem"\npassword_file = "{password}"\ncafile = "{cert}"'
        applied = apply_building(cluster, BUILDING.format(port=server.port, keys=keys), tmp_path)
        assert applied.returncode == 0, applied.stderr
        wait_for(lambda: alarms(cluster, "main")["notifiers"]["ops"]["delivered"] is not None, 10, "the notifier to start")
        put(cluster, 30.0, tmp_path)
        wait_for(lambda: "notifier ops: SMTPAuthenticationError: (535" in cluster.log("main"), 10, "main's failed login in its log")
        assert inbox.envelopes == [] and alarms(cluster, "main")["notifiers"]["ops"]["behind"] == 1  # not skipped
        password.write_text("right-4e7a\n")
        wait_for(lambda: alarms(cluster, "backup")["notifiers"]["ops"]["behind"] == 0, 15, "the retry delivering and recording the raise")
    assert [sent["Subject"] for sent in inbox.messages()] == ["[10] room-hot raised"]
    assert not any(secret in cluster.log(node) for node in cluster.nodes for secret in ("wrong-9f2c", "right-4e7a"))


NOTIFIER = {"name": "ops", "notifier": "mail", "host": "smtp.site.example", "from": SENDER, "to": TO}


def test_a_mail_notifier_is_stored_with_its_defaults_and_no_password():
    documents = validate_building({"notifiers": [{**NOTIFIER, "username": "tandem", "password_file": "/etc/tandem/smtp"}]}, load_plugins(["mail"]))
    assert documents["notifiers"]["ops"] == {
        "notifier": "mail", "events": ["raised"], "classes": [], "host": "smtp.site.example", "port": None, "security": "starttls",
        "username": "tandem", "password_file": "/etc/tandem/smtp", "cafile": None, "from": SENDER, "to": TO,
        "subject": "[{priority}] {alarm} {event}", "timeout": 10.0,
    }


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"to": [TO[0], "ops at site"]}, "notifiers[0].to[1]: Value error, 'ops at site' is not an e-mail address like ops@example.com"),
        ({"to": []}, "notifiers[0].to: List should have at least 1 item"),
        ({"from": "tandem@"}, "notifiers[0].from: Value error, 'tandem@' is not an e-mail address"),
        ({"subject": "{alarm} at {prio}"}, "notifiers[0].subject: Value error, placeholder {prio} is not one of {id}, {ts}, {time}, {alarm},"),
        ({"subject": "{priority:03d}"}, "notifiers[0].subject: Value error, placeholder {priority:03d} is not one of"),
        ({"subject": "{alarm"}, "notifiers[0].subject: Value error, expected '}' before end of string"),
        ({"host": "smtp.site.example\r\nRCPT TO:<x@y>"}, "notifiers[0].host: String should match pattern"),
        ({"prot": 25}, "notifiers[0].prot: Extra inputs are not permitted"),
        ({"security": "ssl"}, "notifiers[0].security: Input should be 'starttls', 'tls' or 'none'"),
        ({"username": "tandem"}, "notifiers[0]: Value error, set both username and password_file, or neither"),
        ({"username": "tandem", "password_file": "smtp.txt"}, "notifiers[0].password_file: Value error, smtp.txt must be an absolute path"),
        ({"password": "hunter2"}, "notifiers[0]: Value error, password: write it to a file on both servers and set password_file"),
    ],
)
def test_bad_mail_notifiers_are_named_at_config_apply(change, says):
    with pytest.raises(BuildingError) as error:
        validate_building({"notifiers": [{**NOTIFIER, **change}]}, load_plugins(["mail"]))
    assert any(problem.startswith(says) for problem in error.value.problems), error.value.problems
