"""Where each site's membership reader goes on from: SiteSyncState records in the positions topic
(compacted, one partition, beside the directory readers' positions), keyed ``site/<store>/<site>``.

A store's reader loads the states of all its sites in one pass over the topic at start, then
keeps them in memory and saves each new one; a state is saved only after Kafka acknowledged
every change before its token (streams/processors/site_reader.py).
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from streams.events import EventDecodeError
from streams.kafka.clients import Brokers
from streams.kafka.positions import latest_positions
from streams.site_events import SiteSyncState, site_position_key


class SitePositionStore:
    def __init__(self, producer: AIOKafkaProducer, *, kafka: Brokers, topic: str) -> None:
        self._producer = producer
        self._kafka = kafka
        self._topic = topic

    async def load_all(self, store: str) -> dict[str, SiteSyncState]:
        """The latest state of every site of `store`, by site, read from the start of the topic to
        its end offset as of now. A site whose latest record is a tombstone has no state."""
        prefix = f"site/{store}/".encode()
        latest = await latest_positions(self._kafka, self._topic, lambda key: key.startswith(prefix))
        states = (_decode(key, value) for key, value in latest.items() if value is not None)
        return {state.site: state for state in states}

    async def save(self, state: SiteSyncState) -> None:
        await self._producer.send_and_wait(self._topic, key=state.key(), value=state.to_bytes())

    async def forget(self, store: str, site: str) -> None:
        """The site is gone from its store: a tombstone, so no state is loaded for it again."""
        await self._producer.send_and_wait(self._topic, key=site_position_key(store, site), value=None)


def _decode(key: bytes, raw: bytes) -> SiteSyncState:
    try:
        state = SiteSyncState.from_bytes(raw)
    except EventDecodeError as exc:
        # Resuming from a guessed token could skip membership changes: refuse to start instead.
        raise RuntimeError(f"stored sync state {key.decode(errors='replace')!r} is unreadable: {exc}") from exc
    if state.key() != key:
        raise RuntimeError(f"stored sync state {key.decode(errors='replace')!r} names another site: "
                           f"{state.key().decode()!r}")
    return state
