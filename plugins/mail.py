"""The built-in mail notifier: sends each alarm event by SMTP with a Message-ID that stays the same if it is sent again."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from string import Formatter
from typing import Annotated, Any, Literal

import aiosmtplib
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from .hookspecs import hookimpl
from .types import NotifierSpec

logger = logging.getLogger(__name__)

ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
ADDRESS = re.compile(rf"{ATEXT}(\.{ATEXT})*@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")  # local@domain, both dot-atoms (RFC 5322)
# what an alarm event may hold (keys an event lacks are empty in the subject), and "time": its ts in ISO 8601 UTC
FIELDS = ("id", "ts", "time", "alarm", "event", "state", "point", "value", "priority", "class", "message", "user", "comment", "until")
SUMMARY = ("alarm", "event", "state", "value", "priority", "class", "message", "point", "time", "user", "comment", "until")


def _address(value: str) -> str:
    if not ADDRESS.fullmatch(value):
        raise ValueError(f"{value!r} is not an e-mail address like ops@example.com")
    return value


def _absolute(path: Path) -> Path:
    if not path.is_absolute():
        raise ValueError(f"{path} must be an absolute path: the active server reads it, not the machine that applies the building")
    return path


Address = Annotated[str, AfterValidator(_address)]
ServerFile = Annotated[Path, AfterValidator(_absolute)]  # a file on each server


class MailSettings(BaseModel):
    """The mail keys of a [[notifiers]] entry."""

    model_config = ConfigDict(extra="forbid")
    host: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")  # a name or an IP address
    port: int | None = Field(None, ge=1, le=65535)  # None: 587 with starttls, 465 with tls, 25 with none
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_file: ServerFile | None = None  # read at each send; the building itself is readable by every API user
    cafile: ServerFile | None = None  # the CA certificates (PEM) that a server with its own certificate is checked against
    sender: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1)
    subject: str = "[{priority}] {alarm} {event}"
    timeout: float = Field(10.0, gt=0, le=120)

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError("password: write it to a file on both servers and set password_file (every API user can read the building)")
        return data

    @field_validator("subject")
    @classmethod
    def _placeholders(cls, subject: str) -> str:
        for _, name, spec, conversion in Formatter().parse(subject):  # a lone { or } raises ValueError
            if name is not None and (name not in FIELDS or spec or conversion):
                written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                raise ValueError(f"placeholder {written} is not one of {', '.join('{' + field + '}' for field in FIELDS)}")
        return subject

    @model_validator(mode="after")
    def _credentials(self) -> MailSettings:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("set both username and password_file, or neither")
        return self


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def message(settings: MailSettings, event: dict[str, Any]) -> EmailMessage:
    """The mail of one event; every header is derived from the event, so sending it again sends the same message."""
    fields = {**dict.fromkeys(FIELDS, ""), **{k: v for k, v in event.items() if v is not None}, "time": _iso(event["ts"])}
    if event.get("until") is not None:
        fields["until"] = _iso(event["until"])
    summary = "".join(f"{key + ':':<10}{fields[key]}\n" for key in SUMMARY if fields[key] != "")
    mail = EmailMessage()
    # <alarm-SEQ.MS@DOMAIN>: the journal id, the event's journal time in ms (new if the cluster is ever rebuilt), the sender's domain
    mail["Message-ID"] = f"<alarm-{event['id']}.{round(event['ts'] * 1000)}@{settings.sender.partition('@')[2]}>"
    mail["Date"] = format_datetime(datetime.fromtimestamp(event["ts"], UTC))
    mail["From"] = settings.sender
    mail["To"] = ", ".join(settings.to)
    mail["Subject"] = " ".join(settings.subject.format_map(fields).split())  # an operator's comment may hold line breaks
    mail.set_content(f"{summary}\n{json.dumps(event, indent=2, sort_keys=True)}\n")
    return mail


class Mail:
    """Delivers an event once the server has accepted it for at least one recipient; anything else raises, and the event is
    sent again later."""

    def __init__(self, settings: BaseModel) -> None:
        self.settings: MailSettings = settings  # type: ignore[assignment]

    async def send(self, event: dict[str, Any]) -> None:
        settings = self.settings
        password = settings.password_file.read_text(encoding="utf-8").strip() if settings.password_file else None
        refused, _ = await aiosmtplib.send(
            message(settings, event),
            sender=settings.sender,
            recipients=settings.to,
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=password,
            use_tls=settings.security == "tls",
            start_tls=settings.security == "starttls",
            cert_bundle=None if settings.cafile is None else str(settings.cafile),
            timeout=settings.timeout,
        )
        if refused:  # not raised: sending again would repeat the message to those who have it
            who = ", ".join(f"{to} ({answer.code} {answer.message})" for to, answer in refused.items())
            logger.warning("alarm event %s: %s refused %s; sent to the other recipients", event["id"], settings.host, who)


@hookimpl
def tandem_notifiers(register: Callable[[NotifierSpec], None]) -> None:
    register(NotifierSpec("mail", Mail, MailSettings))
