"""Dead-letter records: the original bytes plus headers saying where and why they failed.

Modelled on Kafka Connect's ``__connect.errors.*`` headers so that an operator can find the
source record and replay it once the cause is fixed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

HEADER_PREFIX = "idsync.errors."


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
        fields = {
            "stage": self.stage,
            "reason": self.reason,
            "forest": self.forest,
            "topic": self.origin_topic,
            "partition": self.origin_partition,
            "offset": self.origin_offset,
            "source.position": self.source_position,
        }
        return [
            (HEADER_PREFIX + name, str(value).encode())
            for name, value in fields.items()
            if value is not None
        ]

    def log(self) -> None:
        log.warning(
            "dead-letter stage=%s forest=%s origin=%s[%s]@%s position=%s reason=%s",
            self.stage,
            self.forest,
            self.origin_topic,
            self.origin_partition,
            self.origin_offset,
            self.source_position,
            self.reason,
        )
