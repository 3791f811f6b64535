"""`idsync errors`: the error topic listed (or followed), and its dead letters replayed to the topics
they came from once their cause is fixed.

A replay is idempotent twice over. The ledger (`<errors>.replays`, streams/kafka/error_topic.py)
records every dead letter replayed, and one is not replayed again unless asked (`--again`). And
what a replay sends is taken like any record sent twice: the engine drops a change whose position
it already holds and a connector state it already has; the contact writer compares before it
writes. A replayed contact state is sent only while it is still its contact's latest state on the
(compacted) contacts topic: an older one would undo a newer one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from idsync.kafka_clients import client_options
from idsync.operations import moment, shorten, table
from streams.config.topology import Topology
from streams.events import ContactState, DirectoryChange, EventDecodeError
from streams.kafka.error_topic import (
    REPLAY_HEADER, ErrorRecord, ErrorReplay, ensure_replays_topic, key_after, read_replays, read_topic,
    replays_topic,
)

REASON_WIDTH = 60
SOURCE_WIDTH = 50
Out = Callable[[str], None]


# --- what a dead letter is about ------------------------------------------------------------------

class Subject(NamedTuple):
    dn: str | None
    anchor: str | None


def subject(key: bytes | None, value: bytes | None) -> Subject:
    """The object a dead letter is about: a directory change's DN and `forest/object_id`, a contact
    state's DN and anchor (its person), otherwise the record key."""
    try:
        change = DirectoryChange.from_bytes(value)
        return Subject(change.dn, change.key)
    except EventDecodeError:
        pass
    try:
        state = ContactState.from_bytes(value)
        return Subject(state.dn, state.anchor)
    except EventDecodeError:
        pass
    return Subject(None, _key_text(key))


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "0x" + key.hex()


# --- which ones -----------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """A moment: ISO 8601 (a date or date and time, UTC unless it says otherwise) or a time ago
    (`90s`, `30m`, `2h`, `7d`)."""
    duration = _DURATION.fullmatch(text.strip())
    if duration:
        return now - timedelta(seconds=float(duration[1]) * _UNITS[duration[2]])
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a moment: {text!r} (ISO 8601 such as 2026-12-05T10:00, or 30m, 2h, 7d ago)") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def selected(errors: Iterable[ErrorRecord], *, stage: str | None = None, since: datetime | None = None) -> list[ErrorRecord]:
    floor = since.timestamp() * 1000 if since is not None else None
    return [e for e in errors
            if (stage is None or e.stage == stage) and (floor is None or e.timestamp_ms >= floor)]


# --- output ---------------------------------------------------------------------------------------

def error_fields(error: ErrorRecord, replays: Mapping[str, ErrorReplay]) -> dict[str, Any]:
    about = subject(error.key, error.value)
    replay = replays.get(error.error_id)
    return {
        "error": error.error_id, "time": _iso(error.timestamp_ms), "stage": error.stage, "reason": error.reason,
        "forest": error.forest, "topic": error.origin_topic, "partition": error.origin_partition,
        "offset": error.origin_offset, "source_position": error.source_position, "dn": about.dn,
        "anchor": about.anchor, "key": _key_text(error.key),
        "replayed": None if replay is None else
        {"topic": replay.topic, "partition": replay.partition, "offset": replay.offset, "at": replay.at},
    }


HEADERS = ("ERROR", "TIME", "STAGE", "SOURCE", "DN", "ANCHOR", "REPLAYED", "REASON")


def error_row(error: ErrorRecord, replays: Mapping[str, ErrorReplay]) -> tuple[str, ...]:
    about = subject(error.key, error.value)
    replay = replays.get(error.error_id)
    source = error.origin or " ".join(filter(None, (error.forest, error.source_position))) or "-"
    return (error.error_id, moment(_iso(error.timestamp_ms)), error.stage, shorten(source, SOURCE_WIDTH),
            about.dn or "-", about.anchor or "-", moment(replay.at) if replay else "-",
            shorten(error.reason, REASON_WIDTH))


def errors_table(errors: Sequence[ErrorRecord], replays: Mapping[str, ErrorReplay]) -> str:
    if not errors:
        return "no errors"
    body = table(HEADERS, [error_row(e, replays) for e in errors])
    return f"{body}\n{_count(len(errors), 'error')}"


def _iso(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# --- replay ---------------------------------------------------------------------------------------

def plan_replay(errors: Iterable[ErrorRecord], replays: Mapping[str, ErrorReplay], *, again: bool = False
                ) -> tuple[list[ErrorRecord], list[tuple[ErrorRecord, str]]]:
    """The dead letters to send again, and the others with the reason each is left alone."""
    chosen, skipped = [], []
    for error in errors:
        earlier = replays.get(error.error_id)
        if error.origin_topic is None or error.origin_partition is None:
            skipped.append((error, "no origin topic: a reader's rejected record is published again by the "
                                   "reader's next read of the object or by `idsync import --full`"))
        elif earlier is not None and not again:
            skipped.append((error, f"replayed already on {moment(earlier.at)} to "
                                   f"{earlier.topic}[{earlier.partition}]@{earlier.offset} (--again sends it once more)"))
        else:
            chosen.append(error)
    return chosen, skipped


# --- the commands ---------------------------------------------------------------------------------

async def list_errors(topology: Topology, *, json: bool = False, follow: bool = False, stage: str | None = None,
                      since: datetime | None = None, out: Out = print) -> int:
    """Print the error topic's dead letters (a table, or JSON: an array, or with `follow` one
    object a line); with `follow`, then every new one until cancelled."""
    options, topic = client_options(topology.kafka), topology.kafka.topics.errors
    try:
        replays = await read_replays(options, topic)
        errors: list[ErrorRecord] = []
        shown = False  # what the topic held when reading began
        async with aclosing(read_topic(options, topic, follow=follow)) as records:
            async for record in records:
                if record is None:
                    if not shown:
                        _print_listing(errors, replays, json=json, follow=follow, out=out)
                        shown = True
                    continue
                error = ErrorRecord.from_record(record)
                if not selected([error], stage=stage, since=since):
                    continue
                if shown:
                    out(_json_line(error, replays) if json else "  ".join(error_row(error, replays)))
                else:
                    errors.append(error)
    except KafkaError as exc:
        return _unreachable(topology, exc)
    return 0


def _print_listing(errors: list[ErrorRecord], replays: Mapping[str, ErrorReplay], *, json: bool, follow: bool,
                   out: Out) -> None:
    if json and follow:
        for error in errors:
            out(_json_line(error, replays))
    elif json:
        out(orjson.dumps([error_fields(e, replays) for e in errors], option=orjson.OPT_INDENT_2).decode())
    else:
        out(errors_table(errors, replays))


def _json_line(error: ErrorRecord, replays: Mapping[str, ErrorReplay]) -> str:
    return orjson.dumps(error_fields(error, replays)).decode()


async def replay_errors(topology: Topology, *, stage: str | None = None, since: datetime | None = None,
                        again: bool = False, out: Out = print) -> int:
    """Send the chosen dead letters' original records again to their origin topic and partition,
    each once (see the module's description), and record each in the ledger."""
    kafka = topology.kafka
    options, topic = client_options(kafka), kafka.topics.errors
    try:
        errors = []
        async with aclosing(read_topic(options, topic)) as records:
            async for record in records:
                if record is not None:
                    errors.append(ErrorRecord.from_record(record))
        errors = selected(errors, stage=stage, since=since)
        if not errors:
            out("no errors to replay")
            return 0
        chosen, skipped = plan_replay(errors, await read_replays(options, topic), again=again)
        replayed = []
        if chosen:
            await ensure_replays_topic(options, topic, kafka.replication_factor)
            producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True)
            await producer.start()
            try:
                for error in chosen:
                    if error.origin_topic == kafka.topics.contacts and await key_after(
                            options, error.origin_topic, error.origin_partition, error.origin_offset, error.key):
                        skipped.append((error, f"superseded: a newer state of {_key_text(error.key)} is on "
                                               f"{error.origin_topic}[{error.origin_partition}]"))
                        continue
                    replayed.append(await _send_again(producer, topic, error))
            finally:
                await producer.stop()
    except KafkaError as exc:
        return _unreachable(topology, exc)
    for error, replay in replayed:
        about = subject(error.key, error.value)
        out(f"replayed {error.error_id} ({error.stage}) to {replay.topic}[{replay.partition}]@{replay.offset}: "
            + ", ".join(filter(None, (about.dn, about.anchor))))
    for error, why in sorted(skipped, key=lambda item: (item[0].partition, item[0].offset)):
        out(f"skipped {error.error_id} ({error.stage}): {why}")
    out(f"replayed {_count(len(replayed), 'error')}, skipped {len(skipped)}")
    return 0


async def _send_again(producer: AIOKafkaProducer, errors_topic: str, error: ErrorRecord
                      ) -> tuple[ErrorRecord, ErrorReplay]:
    """The original record to its origin partition (acknowledged by every replica), then its line
    in the ledger. A crash between the two sends it once more next time: harmless (see above)."""
    assert error.origin_topic is not None
    sent = await producer.send_and_wait(
        error.origin_topic, error.value, key=error.key, partition=error.origin_partition,
        headers=[(REPLAY_HEADER, f"{errors_topic}/{error.error_id}".encode())],
    )
    replay = ErrorReplay(error=error.error_id, stage=error.stage, topic=sent.topic, partition=sent.partition,
                         offset=sent.offset, at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    await producer.send_and_wait(replays_topic(errors_topic), replay.to_bytes(), key=error.error_id.encode())
    return error, replay


def _unreachable(topology: Topology, exc: KafkaError) -> int:
    print(f"cannot reach Kafka at {topology.kafka.bootstrap_servers}: {exc}", file=sys.stderr)
    return 1
