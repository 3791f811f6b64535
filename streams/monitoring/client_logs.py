"""aiokafka's log during a Kafka outage, cut to what an operator can read.

While a broker is away every aiokafka client logs each failed connection, metadata request,
fetch and heartbeat at ERROR: about 200 lines a second from one worker. The outage itself is
reported by idsync (streams/kafka/watch.py: one line when it starts, one when it ends); of
aiokafka's lines, each kind is kept once a minute, with how many like it were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# aiokafka's modules that log connection trouble; a filter on a logger applies to its own
# records only, not to those of its children, so each is named.
AIOKAFKA_LOGGERS = (
    "aiokafka", "aiokafka.client", "aiokafka.conn", "aiokafka.cluster", "aiokafka.producer.producer",
    "aiokafka.producer.sender", "aiokafka.consumer.consumer", "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator", "aiokafka.consumer.subscription_state",
)
WINDOW_SECONDS = 60.0


class OncePerWindow(logging.Filter):
    """Lets through one WARNING-or-worse record of each kind (logger and message template) per
    window; the next one let through says how many were left out. Lower levels pass untouched."""

    def __init__(self, *, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window = window
        self._clock = clock
        self._kinds: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, str(record.msg))
        now = self._clock()
        shown, left_out = self._kinds.get(kind, (None, 0))
        if shown is not None and now - shown < self._window:
            self._kinds[kind] = (shown, left_out + 1)
            return False
        self._kinds[kind] = (now, 0)
        if left_out:
            record.msg = f"{record.msg} ({left_out} like it left out in the last {self._window:.0f}s)"
        return True


_FILTER = OncePerWindow()


def quiet_kafka_clients() -> None:
    """Install the filter on aiokafka's loggers (once; calling again does nothing)."""
    for name in AIOKAFKA_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
