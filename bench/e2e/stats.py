"""Pure figures of the end-to-end benchmark: percentiles, latency summaries, rates over time, ratios."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction in 0..1) of `values`; NaN for none."""
    if not values:
        return math.nan
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be within 0..1, not {fraction}")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Latency:
    """Latencies in ms of the changes that arrived, and how many of those sent never did."""

    sent: int
    arrived: int
    # Seen no later than the modify returned to its writer: counted as 0 ms.
    early: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def missing(self) -> int:
        return self.sent - self.arrived

    def as_dict(self) -> dict:
        return asdict(self) | {"missing": self.missing}


def latency(sent_at: Mapping[str, float], seen_at: Mapping[str, float]) -> tuple[Latency, list[float]]:
    """Summary and the sorted latencies (ms) of each tag sent at `sent_at[tag]` (seconds) and seen
    at `seen_at[tag]`; a tag never seen counts as missing, one seen before it was sent as 0 ms
    (a replica can show a change before the writer's process has read the modify's response)."""
    raw = [(seen_at[tag] - sent) * 1000 for tag, sent in sent_at.items() if tag in seen_at]
    values = sorted(max(0.0, value) for value in raw)
    summary = Latency(
        sent=len(sent_at), arrived=len(values), early=sum(1 for value in raw if value <= 0),
        p50_ms=percentile(values, 0.50), p95_ms=percentile(values, 0.95),
        p99_ms=percentile(values, 0.99), max_ms=values[-1] if values else math.nan,
    )
    return summary, values


@dataclass(frozen=True, slots=True, kw_only=True)
class Sync:
    """An initial sync: objects that arrived, seconds from the start to the first and the last."""

    objects: int
    expected: int
    first_s: float
    last_s: float

    @property
    def per_second(self) -> float:
        """Objects over the whole time from the start (start-up included)."""
        return self.objects / self.last_s if self.last_s > 0 else math.nan

    @property
    def flowing_per_second(self) -> float:
        """Objects per second from the first to the last (start-up left out)."""
        span = self.last_s - self.first_s
        return (self.objects - 1) / span if self.objects > 1 and span > 0 else math.nan

    def as_dict(self) -> dict:
        return asdict(self) | {"per_second": self.per_second, "flowing_per_second": self.flowing_per_second}


def sync_figures(started: float, arrivals: Iterable[float], expected: int) -> Sync:
    times = sorted(arrivals)
    if not times:
        return Sync(objects=0, expected=expected, first_s=math.nan, last_s=math.nan)
    return Sync(objects=len(times), expected=expected, first_s=times[0] - started, last_s=times[-1] - started)


def rate_over_time(started: float, arrivals: Iterable[float], bin_seconds: float) -> list[tuple[float, float]]:
    """(bin start in seconds since `started`, arrivals per second in that bin), empty bins included."""
    if bin_seconds <= 0:
        raise ValueError("bin_seconds must be positive")
    counts: dict[int, int] = {}
    for moment in arrivals:
        index = max(0, int((moment - started) // bin_seconds))
        counts[index] = counts.get(index, 0) + 1
    if not counts:
        return []
    return [(index * bin_seconds, counts.get(index, 0) / bin_seconds) for index in range(max(counts) + 1)]


def ratio(ours: float | None, reference: float | None) -> float:
    """ours / reference; NaN when either is unknown or the reference is zero."""
    if ours is None or reference is None or math.isnan(ours) or math.isnan(reference) or reference == 0:
        return math.nan
    return ours / reference


def median(values: Sequence[float]) -> float:
    known = [value for value in values if not math.isnan(value)]
    return statistics.median(known) if known else math.nan
