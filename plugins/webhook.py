"""The built-in webhook notifier: POSTs each alarm event as JSON, with its journal id as the Idempotency-Key header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from .hookspecs import hookimpl
from .types import NotifierSpec


class WebhookSettings(BaseModel):
    """The webhook keys of a [[notifiers]] entry."""

    model_config = ConfigDict(extra="forbid")
    url: AnyHttpUrl
    timeout: float = Field(5.0, gt=0, le=60)
    headers: dict[str, str] = {}  # e.g. an Authorization header the receiver expects


class Webhook:
    """Delivers an event when the receiver answers 2xx; anything else raises, and the event is sent again later."""

    def __init__(self, settings: BaseModel) -> None:
        self.settings: WebhookSettings = settings  # type: ignore[assignment]

    async def send(self, event: dict[str, Any]) -> None:
        headers = {**self.settings.headers, "Idempotency-Key": str(event["id"])}
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(str(self.settings.url), json=event, headers=headers) as response:
                if response.status >= 300:
                    raise ConnectionError(f"webhook {self.settings.url} answered {response.status} {response.reason}")


@hookimpl
def tandem_notifiers(register: Callable[[NotifierSpec], None]) -> None:
    register(NotifierSpec("webhook", Webhook, WebhookSettings))
