"""An outage of a connector, as operators see it: one log line when it starts, one when it ends.

A runner retries every failure with backoff; logging each retry would bury the two facts that
matter (when the directory or broker went away, and for how long) under hundreds of lines. The
retries in between are logged at debug level. The ``up`` gauge and the outage counter say the
same to Prometheus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from streams.monitoring.backoff import Backoff

log = logging.getLogger(__name__)


class Outage:
    def __init__(
        self,
        subject: str,
        *,
        up: Gauge,
        outages: Counter,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`subject` names the connector in key=value form (e.g. ``component=reader forest=a``);
        `up` and `outages` are its own (labelled) metrics."""
        self._subject = subject
        self._up = up
        self._outages = outages
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._started: float | None = None
        self._failures = 0
        # Up until an outage says otherwise: a connector that is still starting is not down.
        self._show()

    @property
    def ongoing(self) -> bool:
        return self._started is not None

    def failed(self, error: BaseException) -> float:
        """Record a failed attempt; returns how many seconds to wait before the next one."""
        delay = self._backoff.next_delay()
        self._failures += 1
        if self._started is None:
            self._started = self._clock()
            _DOWN.setdefault(id(self._up), set()).add(id(self))
            self._show()
            self._outages.inc()
            log.warning("outage started %s error=%r retry_in=%.1fs", self._subject, describe_error(error), delay)
        else:
            log.debug(
                "outage goes on %s error=%r failures=%d retry_in=%.1fs",
                self._subject, describe_error(error), self._failures, delay,
            )
        return delay

    def succeeded(self) -> None:
        """Record a successful attempt, which ends an ongoing outage."""
        if self._started is not None:
            log.info(
                "outage ended %s duration=%.1fs failures=%d",
                self._subject, self._clock() - self._started, self._failures,
            )
            self._started = None
            _DOWN.get(id(self._up), set()).discard(id(self))
            self._show()
        self._failures = 0
        self._backoff.reset()


    def _show(self) -> None:
        """Several outages may share one gauge (a reader's directory and its Kafka): it is 1
        only while none of them is ongoing."""
        self._up.set(0 if _DOWN.get(id(self._up)) else 1)


# The ongoing outages of each `up` gauge (by identity).
_DOWN: dict[int, set[int]] = {}


def describe_error(error: BaseException) -> str:
    """The error's type and message (Kafka's errors already start their message with the type)."""
    text = str(error)
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}"
