"""Capped exponential backoff for waiting out an unavailable broker or directory."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, *, first: float = 0.2, cap: float = 30.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._cap, self._next * 2)
        # Jitter keeps several readers from hammering a recovering server in step.
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self._first
