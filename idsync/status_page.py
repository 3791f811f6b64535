"""The worker's status page (GET /status beside /metrics): readers, consumer lag with a chart of
the last hour, recent errors, open conflicts and held deletes. Read-only, one HTML document with
its chart drawn as inline SVG: no script, no framework, nothing fetched from elsewhere, so it
works on a machine without internet.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape

from aiokafka.errors import KafkaError

from idsync.kafka_clients import client_options
from idsync.operations import held_deletes, moment, open_conflicts, shorten
from streams.config.topology import Topology
from streams.kafka.compacted import latest_values
from streams.kafka.error_topic import ErrorRecord, read_topic
from streams.metaverse_events import Conflict, DeleteRequest
from streams.monitoring.metrics import POSITION_SAVED, READER_SECONDS_SINCE_READ, READER_UP, SINK_UP, LagMetrics

RECENT_ERRORS = 20
CHART_WIDTH, CHART_HEIGHT = 560, 160


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderRow:
    forest: str
    mode: str
    up: bool
    position_saved: float | None  # Unix time the reader last saved its position
    seconds_since_read: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    at: float
    readers: Sequence[ReaderRow]
    sink_up: bool
    lag: dict[str, list[tuple[float, int, float]]]  # group -> (time, records, seconds), oldest first
    errors: Sequence[ErrorRecord] = ()
    conflicts: Sequence[Conflict] = ()
    held: Sequence[DeleteRequest] = ()
    problems: Sequence[str] = field(default_factory=tuple)  # what could not be read


async def gather(topology: Topology, lag: LagMetrics) -> Status:
    """Everything the page shows, read now; a topic that cannot be read is named, not fatal."""
    await lag.refresh()
    problems: list[str] = []
    kafka = topology.kafka
    conflicts: list[Conflict] = []
    held: list[DeleteRequest] = []
    errors: list[ErrorRecord] = []
    try:
        conflicts, _ = open_conflicts(await latest_values(kafka, kafka.topics.conflicts))
        held, _ = held_deletes(await latest_values(kafka, kafka.topics.held_deletes))
        errors = await _recent_errors(topology)
    except (KafkaError, OSError) as exc:
        problems.append(f"Kafka not readable: {type(exc).__name__}: {exc}")
    readers = [
        ReaderRow(forest=f.name, mode=f.change_capture.mode, up=_value(READER_UP, f.name) == 1,
                  position_saved=_value(POSITION_SAVED, f.name), seconds_since_read=_value(READER_SECONDS_SINCE_READ,
                                                                                           f.name))
        for f in topology.forests
    ]
    return Status(at=time.time(), readers=readers, sink_up=_value(SINK_UP, None) == 1, lag=lag.history.samples(),
                  errors=errors, conflicts=conflicts, held=held, problems=problems)


async def _recent_errors(topology: Topology) -> list[ErrorRecord]:
    found: list[ErrorRecord] = []
    async for record in read_topic(client_options(topology.kafka), topology.kafka.topics.errors):
        if record is None:
            break
        found.append(ErrorRecord.from_record(record))
        del found[:-RECENT_ERRORS]
    return sorted(found, key=lambda e: e.timestamp_ms, reverse=True)


def _value(gauge, label: str | None) -> float | None:
    for family in gauge.collect():
        for sample in family.samples:
            if label is None or sample.labels.get("forest") == label:
                return sample.value
    return None


# --- rendering ------------------------------------------------------------------------------------

def render(status: Status) -> str:
    """The page as one HTML document."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>idsync status</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>idsync status</h1><p class='muted'>as of {escape(_when(status.at))} (reload for new figures)</p>",
        *(f"<p class='bad'>{escape(problem)}</p>" for problem in status.problems),
        "<h2>Readers</h2>", _readers(status),
        "<h2>Consumer lag</h2>", _lag(status),
        f"<h2>Open conflicts ({len(status.conflicts)})</h2>", _conflicts(status.conflicts),
        f"<h2>Held deletes ({len(status.held)})</h2>", _held(status.held),
        f"<h2>Recent errors ({len(status.errors)})</h2>", _errors(status.errors),
        "</body></html>",
    ]
    return "".join(parts)


def _readers(status: Status) -> str:
    rows = [(r.forest, r.mode, _up(r.up), _when(r.position_saved) if r.position_saved else "-",
             f"{r.seconds_since_read:.0f} s ago" if r.seconds_since_read is not None else "-")
            for r in status.readers]
    rows.append(("contact writer", "-", _up(status.sink_up), "-", "-"))
    return _table(("Forest", "Mode", "State", "Position saved", "Last read"), rows, raw_columns={2})


def _lag(status: Status) -> str:
    if not status.lag:
        return "<p class='muted'>no lag read yet</p>"
    rows = [(group, str(samples[-1][1]), f"{samples[-1][2]:.1f} s") for group, samples in status.lag.items()]
    return _table(("Group", "Records behind", "Oldest unconsumed"), rows) + chart(status.lag, status.at)


def chart(lag: dict[str, list[tuple[float, int, float]]], now: float, window: float = 3600.0) -> str:
    """Records behind per group over the last `window` seconds, as an inline SVG line chart."""
    top = max([records for samples in lag.values() for _, records, _ in samples] + [1])
    left, bottom = 48, CHART_HEIGHT - 24
    width = CHART_WIDTH - left - 8

    def x(at: float) -> float:
        return left + width * max(0.0, min(1.0, 1 - (now - at) / window))

    def y(records: int) -> float:
        return bottom - (bottom - 8) * records / top

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{CHART_WIDTH}' height='{CHART_HEIGHT}' role='img' "
           f"aria-label='consumer lag, last hour'>",
           f"<line x1='{left}' y1='{bottom}' x2='{left + width}' y2='{bottom}' stroke='#888'/>",
           f"<line x1='{left}' y1='8' x2='{left}' y2='{bottom}' stroke='#888'/>",
           f"<text x='{left - 4}' y='14' text-anchor='end'>{top}</text>",
           f"<text x='{left - 4}' y='{bottom}' text-anchor='end'>0</text>",
           f"<text x='{left}' y='{CHART_HEIGHT - 6}'>-60 min</text>",
           f"<text x='{left + width}' y='{CHART_HEIGHT - 6}' text-anchor='end'>now</text>"]
    for i, (group, samples) in enumerate(sorted(lag.items())):
        colour = _COLOURS[i % len(_COLOURS)]
        points = " ".join(f"{x(at):.1f},{y(records):.1f}" for at, records, _ in samples)
        out.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' points='{points}'/>")
        out.append(f"<text x='{left + 8}' y='{22 + 14 * i}' style='fill:{colour}'>{escape(group)}</text>")
    out.append("</svg>")
    return "".join(out)


def _conflicts(conflicts: Sequence[Conflict]) -> str:
    rows = [(c.kind, c.conflict_id, moment(c.at), shorten(", ".join(c.parties), 80), shorten(c.reason, 80))
            for c in conflicts]
    return _table(("Kind", "Conflict", "Since", "Parties", "Reason"), rows) if rows else "<p>none</p>"


def _held(held: Sequence[DeleteRequest]) -> str:
    rows = [(r.person, r.dn or "-", moment(r.requested_at)) for r in held]
    return _table(("Person", "Contact", "Requested"), rows) if rows else "<p>none</p>"


def _errors(errors: Sequence[ErrorRecord]) -> str:
    rows = [(e.error_id, _when(e.timestamp_ms / 1000), e.stage, e.forest or "-", e.origin or "-",
             shorten(e.reason, 100)) for e in errors]
    return _table(("Error", "Time", "Stage", "Forest", "Source", "Reason"), rows) if rows else "<p>none</p>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], raw_columns: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell if i in raw_columns else escape(cell)}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _up(up: bool) -> str:
    return "<span class='ok'>up</span>" if up else "<span class='bad'>outage</span>"


def _when(at: float | None) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if at else "-"


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
_CSS = ("body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.1em;"
        "margin-top:1.4em}table{border-collapse:collapse}th,td{border-bottom:1px solid #ddd;padding:3px 10px;"
        "text-align:left}th{background:#f3f3f3}.ok{color:#1a7f37;font-weight:600}.bad{color:#c62828;"
        "font-weight:600}.muted{color:#777}svg text{font-size:11px;fill:#555}")


async def page(topology: Topology, lag: LagMetrics) -> str:
    """The page as the worker serves it at /status."""
    return render(await gather(topology, lag))
