"""Dead-letter records: the original bytes plus headers saying where and why they failed.

Modelled on Kafka Connect's ``__connect.errors.*`` headers so that an operator can find the
source record and replay it once the cause is fixed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from streams.monitoring.metrics import DEAD_LETTERS

log = logging.getLogger(__name__)

HEADER_PREFIX = "idsync.errors."
# An oversized record is kept as its first bytes: enough to identify it, small enough to send.
MAX_DEAD_LETTER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    stage: str
    reason: str
    key: bytes | None
    value: bytes | None
    forest: str | None = None
    origin_topic: str | None = None
    origin_partition: int | None = None
    origin_offset: int | None = None
    source_position: str | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        return [(HEADER_PREFIX + name, value.encode()) for name, value in self._fields()]

    def log(self) -> None:
        """Logs the letter and counts it (idsync_dead_letters_total by stage): every stage calls
        this once per letter it sends."""
        DEAD_LETTERS.labels(self.stage).inc()
        log.warning("dead-letter %s", " ".join(f"{name}={value}" for name, value in self._fields()))

    def _fields(self) -> list[tuple[str, str]]:
        fields = {
            "stage": self.stage,
            "forest": self.forest,
            "topic": self.origin_topic,
            "partition": self.origin_partition,
            "offset": self.origin_offset,
            "source.position": self.source_position,
            "reason": self.reason,
        }
        return [(name, str(value)) for name, value in fields.items() if value is not None]
