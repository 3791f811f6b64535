"""`idsync errors` without a broker: dead letters read back from their headers, the object each is
about, the filters, the table and JSON, and which ones a replay sends. (Against the real broker
and a real contact writer: tests/integration/test_errors.py.)"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from idsync import cli
from idsync.errors import (
    error_fields, errors_table, parse_since, plan_replay, selected, subject,
)
from streams.events import ChangeOp, ContactState, DirectoryChange
from streams.kafka.dead_letters import DeadLetter
from streams.kafka.error_topic import ErrorRecord, ErrorReplay

NOW = datetime(2026, 12, 5, 10, 0, tzinfo=timezone.utc)
T = int(NOW.timestamp() * 1000)

CHANGE = DirectoryChange(forest="forest-a", object_id="0b1c", op=ChangeOp.MODIFY, dn="uid=ada,ou=people,dc=a",
                         position="p-7", changed_at="2026-12-05T09:59:00+00:00")
STATE = ContactState(anchor="person-42", present=True, container_dn="ou=gal,dc=central",
                     dn="cn=Ada Lovelace,ou=gal,dc=central")


def letter_record(letter: DeadLetter, offset: int, timestamp_ms: int = T) -> ConsumerRecord:
    return ConsumerRecord(topic="idsync.errors", partition=0, offset=offset, timestamp=timestamp_ms, timestamp_type=0,
                          key=letter.key, value=letter.value, checksum=None, serialized_key_size=0,
                          serialized_value_size=0, headers=letter.headers())


def metaverse_error(offset: int = 3, timestamp_ms: int = T) -> ErrorRecord:
    return ErrorRecord.from_record(letter_record(DeadLetter(
        stage="metaverse", reason="no join rule applies", key=CHANGE.key.encode(), value=CHANGE.to_bytes(),
        forest="forest-a", origin_topic="idsync.directory-changes", origin_partition=1, origin_offset=17,
    ), offset, timestamp_ms))


def writer_error(offset: int = 4, timestamp_ms: int = T) -> ErrorRecord:
    return ErrorRecord.from_record(letter_record(DeadLetter(
        stage="contact-writer", reason="anchor 'person-42' is on 2 entries", key=b"person-42", value=STATE.to_bytes(),
        origin_topic="idsync.central-contacts", origin_partition=2, origin_offset=5,
    ), offset, timestamp_ms))


def reader_error(offset: int = 1) -> ErrorRecord:
    return ErrorRecord.from_record(letter_record(DeadLetter(
        stage="reader", reason="event of 1.2 MB is over the limit", key=None, value=b"\x30\x82raw",
        forest="forest-b", source_position="20261205095900.000001Z#000000#000#000000",
    ), offset))


def test_a_dead_letter_reads_back_from_its_headers():
    error = metaverse_error()
    assert (error.error_id, error.stage, error.reason, error.forest) == ("0:3", "metaverse", "no join rule applies", "forest-a")
    assert (error.origin_topic, error.origin_partition, error.origin_offset) == ("idsync.directory-changes", 1, 17)
    assert error.origin == "idsync.directory-changes[1]@17"
    assert (error.key, error.value) == (b"forest-a/0b1c", CHANGE.to_bytes())
    assert reader_error().origin is None and reader_error().source_position.startswith("20261205")


def test_the_subject_is_the_dn_and_anchor_of_a_change_or_contact_state_else_the_key():
    assert subject(CHANGE.key.encode(), CHANGE.to_bytes()) == ("uid=ada,ou=people,dc=a", "forest-a/0b1c")
    assert subject(b"person-42", STATE.to_bytes()) == ("cn=Ada Lovelace,ou=gal,dc=central", "person-42")
    assert subject(b"email:ada@x.org", b'{"schema": "idsync.join-claim"}') == (None, "email:ada@x.org")
    assert subject(b"\xff\x00", None) == (None, "0xff00")
    assert subject(None, b"raw") == (None, None)


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", datetime(2026, 12, 5, 9, 30, tzinfo=timezone.utc)),
    ("2h", datetime(2026, 12, 5, 8, 0, tzinfo=timezone.utc)),
    ("1.5d", datetime(2026, 12, 3, 22, 0, tzinfo=timezone.utc)),
    ("2026-12-04", datetime(2026, 12, 4, tzinfo=timezone.utc)),
    ("2026-12-04T10:00:00+01:00", datetime(2026, 12, 4, 9, 0, tzinfo=timezone.utc)),
])
def test_since_is_a_moment_or_a_time_ago(text, expected):
    assert parse_since(text, NOW) == expected


def test_since_refuses_what_is_neither():
    with pytest.raises(ValueError, match="not a moment"):
        parse_since("yesterday", NOW)


def test_filters_by_stage_and_since():
    old, new = metaverse_error(3, T - 3_600_000), writer_error(4, T)
    assert selected([old, new], stage="metaverse") == [old]
    assert selected([old, new], since=parse_since("30m", NOW)) == [new]
    assert selected([old, new]) == [old, new]


def test_table_shows_where_each_came_from_and_what_it_is_about():
    replays = {"0:4": ErrorReplay(error="0:4", stage="contact-writer", topic="idsync.central-contacts", partition=2,
                                  offset=9, at="2026-12-05T10:05:00+00:00")}
    assert errors_table([reader_error(), metaverse_error(), writer_error()], replays).splitlines() == [
        "ERROR  TIME                  STAGE           SOURCE                                             "
        "DN                                 ANCHOR         REPLAYED              REASON",
        "0:1    2026-12-05 10:00:00Z  reader          forest-b 20261205095900.000001Z#000000#000#000000  "
        "-                                  -              -                     event of 1.2 MB is over the limit",
        "0:3    2026-12-05 10:00:00Z  metaverse       idsync.directory-changes[1]@17                     "
        "uid=ada,ou=people,dc=a             forest-a/0b1c  -                     no join rule applies",
        "0:4    2026-12-05 10:00:00Z  contact-writer  idsync.central-contacts[2]@5                       "
        "cn=Ada Lovelace,ou=gal,dc=central  person-42      2026-12-05 10:05:00Z  anchor 'person-42' is on 2 entries",
        "3 errors",
    ]
    assert errors_table([], {}) == "no errors"


def test_json_has_every_field():
    fields = error_fields(writer_error(), {})
    assert orjson.loads(orjson.dumps(fields)) == {
        "error": "0:4", "time": "2026-12-05T10:00:00.000+00:00", "stage": "contact-writer",
        "reason": "anchor 'person-42' is on 2 entries", "forest": None, "topic": "idsync.central-contacts",
        "partition": 2, "offset": 5, "source_position": None, "dn": "cn=Ada Lovelace,ou=gal,dc=central",
        "anchor": "person-42", "key": "person-42", "replayed": None,
    }


def test_a_replay_sends_each_dead_letter_with_an_origin_once_unless_again():
    earlier = ErrorReplay(error="0:3", stage="metaverse", topic="idsync.directory-changes", partition=1, offset=40,
                          at="2026-12-05T10:01:00+00:00")
    errors = [reader_error(1), metaverse_error(3), writer_error(4)]
    chosen, skipped = plan_replay(errors, {"0:3": earlier})
    assert [e.error_id for e in chosen] == ["0:4"]
    assert [(e.error_id, why.split(":")[0]) for e, why in skipped] == [("0:1", "no origin topic"), ("0:3", "replayed already on 2026-12-05 10")]
    chosen, skipped = plan_replay(errors, {"0:3": earlier}, again=True)
    assert [e.error_id for e in chosen] == ["0:3", "0:4"] and len(skipped) == 1


def test_a_replay_record_round_trips():
    replay = ErrorReplay(error="0:3", stage="metaverse", topic="t", partition=1, offset=40, at="2026-12-05T10:01:00+00:00")
    assert ErrorReplay.from_bytes(replay.to_bytes()) == replay


@pytest.mark.parametrize(("argv", "message"), [
    (["errors", "replay", "--json"], "do not go with replay"),
    (["errors", "--again"], "--again goes with replay"),
])
def test_options_that_do_not_go_together_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main([*argv, "--topology", "x.yaml"])
    assert exit.value.code == 2 and message in capsys.readouterr().err
