"""The delete circuit breaker (Entra Connect's "prevent accidental deletes", as a sliding window).

Deprovisioning a contact asks the breaker first. Within any `window_seconds`, at most `limit`
deletes pass; the ones past it are held until an operator approves or rejects them, while
everything else keeps flowing. A held delete is only released by a person: a burst of deletes
is likelier a wrong filter, an emptied OU or a restored backup than a real exodus.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerState:
    """When the deletes that passed within the window passed (seconds, ascending), and whether
    the breaker is tripped (it stays tripped until the operator decided every held delete)."""

    passed_at: tuple[float, ...] = ()
    held: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"passed_at": list(self.passed_at), "held": self.held}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BreakerState:
        return cls(passed_at=tuple(float(t) for t in data.get("passed_at", ())), held=int(data.get("held", 0)))


def admit(
    state: BreakerState, now: float, *, limit: int, window_seconds: float, hold: bool = False
) -> tuple[BreakerState, bool]:
    """Whether one more delete may pass now. Once one is held, the later ones are held too
    (until the operator released them all), so a burst is judged as a whole. `hold`: held
    whatever the window (a sweep over the mass-delete guard)."""
    recent = tuple(t for t in state.passed_at if t > now - window_seconds)
    if hold or state.held or len(recent) >= limit:
        return replace(state, passed_at=recent, held=state.held + 1), False
    return replace(state, passed_at=recent + (now,)), True


def decided(state: BreakerState, count: int) -> BreakerState:
    """`count` held deletes were approved or rejected by the operator."""
    return replace(state, held=max(0, state.held - count))
