"""Waiting for a secret that is not there yet (a password file mounted later, a variable set on
the next deployment): the component that needs it waits, says so at ERROR once a minute with the
secret's YAML path, and starts as soon as it can be read; the other components go on meanwhile."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from prometheus_client import Gauge

from streams.config.security import Secret

log = logging.getLogger(__name__)

# How often a missing secret is looked for again (reading a file or variable costs nothing), and
# how often the wait is logged.
CHECK_SECONDS = 5.0
LOG_SECONDS = 60.0


async def wait_for_secret(
    secret: Secret,
    subject: str,
    *,
    waits: str,
    up: Gauge | None = None,
    check_seconds: float = CHECK_SECONDS,
    log_seconds: float = LOG_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once `secret` can be read. `subject` names the component in key=value form,
    `waits` says what waits for it; `up` is held at 0 meanwhile."""
    logged_at: float | None = None
    while (problem := secret.problem()) is not None:
        if up is not None:
            up.set(0)
        now = clock()
        if logged_at is None or now - logged_at >= log_seconds:
            log.error("secret unavailable %s error=%r: %s; looked for again every %.0fs",
                      subject, problem, waits, check_seconds)
            logged_at = now
        await asyncio.sleep(check_seconds)
    if logged_at is not None:
        log.info("secret available %s", subject)
