"""Fill this server's trend gap (left by a snapshot install or a failed write) with the samples a peer server recorded."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
from pydantic import BaseModel, ValidationError

from cluster.node import ClusterNode
from plugins.trend_store import Sample, TrendStore

logger = logging.getLogger(__name__)

CHECK_PERIOD = 0.5  # seconds between looks for a gap
FETCH_TIMEOUT = 30.0


class _Answer(BaseModel):
    """What GET /api/v1/trends/_samples answers: the samples, and the last command they cover."""

    samples: list[Sample]
    upto: int


async def fill_trend_gaps(node: ClusterNode, store: TrendStore, session: aiohttp.ClientSession) -> None:
    """Until cancelled: whenever the store has a gap, fetch it page by page from whichever peer server has recorded it."""
    peers = [peer for peer in node.config.cluster.nodes if peer.is_server and peer.name != node.name]
    headers = {"Authorization": f"Bearer {node.config.api_token}"}
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    while True:
        gap = store.gap()
        if gap is None:
            await asyncio.sleep(CHECK_PERIOD)
            continue
        after, upto = gap
        for peer in peers:
            url = f"{peer.url}/api/v1/trends/_samples"
            try:
                async with session.get(url, params={"after": after, "upto": upto}, headers=headers, timeout=timeout, ssl=peer.client_ssl() or True) as response:
                    if response.status != 200:
                        continue
                    answer = _Answer.model_validate(await response.json())
            except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
                logger.debug("trend gap: %s did not answer: %s", peer.name, exc)
                continue
            except (ValidationError, ValueError) as exc:
                logger.warning("trend gap: %s answered nonsense: %s", peer.name, exc)
                continue
            if answer.upto > after:
                await asyncio.wrap_future(store.fill(answer.samples, answer.upto))
                logger.info("trend gap: %d samples of commands %d..%d from %s", len(answer.samples), after + 1, answer.upto, peer.name)
                break
        else:
            await asyncio.sleep(CHECK_PERIOD)  # no peer has recorded that far yet
