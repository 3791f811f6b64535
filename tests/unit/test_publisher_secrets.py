"""No password hash or key leaves a reader: secret attributes are dropped from every change and
from every record a reader rejects, before the error topic."""

from __future__ import annotations

import asyncio

import orjson

from streams.config.topology import Topics
from streams.contracts import ReadBatch, RejectedRecord
from streams.events import ChangeOp, DirectoryChange, Modification, ModOp
from streams.kafka.publisher import ChangePublisher
from streams.rules.secrets import WITHHELD, scrub_record, without_secrets

HASH = "{SSHA}c2VjcmV0LWhhc2gtYnl0ZXM="


def change(**fields) -> DirectoryChange:
    return DirectoryChange(
        forest="f", object_id="1", op=ChangeOp.ADD, dn="uid=a,dc=x", position="1", changed_at="2026-11-22T00:00:00Z",
        **fields,
    )


def test_secret_values_and_modifications_are_dropped_whatever_their_spelling_or_options() -> None:
    added = change(attributes={"cn": ("a",), "userPassword": ("{SSHA}x",), "userPassword;base64": ("AAEC",), "UNICODEPWD": ("x",)})
    assert without_secrets(added).attributes == {"cn": ("a",)}
    modified = change(
        modifications=(
            Modification(attribute="displayName", op=ModOp.REPLACE, values=("A",)),
            Modification(attribute="pwdHistory", op=ModOp.ADD, values=("h",)),
            Modification(attribute="sambaNTPassword", op=ModOp.REPLACE, values=("n",)),
        )
    )
    assert [m.attribute for m in without_secrets(modified).modifications] == ["displayName"]


def test_a_change_without_secrets_is_passed_on_as_it_is() -> None:
    plain = change(attributes={"cn": ("a",), "passwordHint": ("not a secret by name",)})
    assert without_secrets(plain) is plain


def test_a_rejected_entry_loses_its_secret_attributes_whatever_their_spelling() -> None:
    entry = {"cn": ["a"], "userPassword": [HASH], "USERPASSWORD;binary": ["x"], "description": ["kept"]}
    assert orjson.loads(scrub_record(orjson.dumps(entry))) == {"cn": ["a"], "description": ["kept"]}
    ad_entry = {"dn": "CN=a,DC=x", "attributes": {"cn": ["a"], "unicodePwd": ["x"], "supplementalCredentials": ["y"]}}
    assert orjson.loads(scrub_record(orjson.dumps(ad_entry))) == {"dn": "CN=a,DC=x", "attributes": {"cn": ["a"]}}


def test_a_rejected_accesslog_record_loses_the_lines_of_secret_attributes() -> None:
    record = {
        "reqDN": ["uid=a,dc=x"],
        "reqMod": [f"userPassword:= {HASH}", "displayName:= A", "userPassword;binary:+ x", "pwdHistory:-"],
        "reqOld": [f"userPassword: {HASH}", "displayName: B"],
    }
    assert orjson.loads(scrub_record(orjson.dumps(record))) == {
        "reqDN": ["uid=a,dc=x"], "reqMod": ["displayName:= A"], "reqOld": ["displayName: B"],
    }


def test_a_rejected_change_event_loses_secret_values_and_modifications() -> None:
    event = {"attributes": {"cn": ["a"], "userPassword": [HASH]},
             "modifications": [{"attribute": "userPassword", "op": "replace", "values": [HASH]},
                               {"attribute": "cn", "op": "replace", "values": ["b"]}]}
    assert orjson.loads(scrub_record(orjson.dumps(event))) == {
        "attributes": {"cn": ["a"]}, "modifications": [{"attribute": "cn", "op": "replace", "values": ["b"]}],
    }


def test_a_record_without_secrets_is_kept_byte_for_byte_and_one_that_is_not_json_is_withheld() -> None:
    raw = b'{"cn": ["a"],  "description": ["userPasswordHint: not a secret"]}'
    assert scrub_record(raw) is raw
    assert scrub_record(b"uid=a userPassword=" + HASH.encode()) == WITHHELD


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def partitions_for(self, topic: str):
        return {0}

    async def send(self, topic: str, value: bytes, headers=None, **_):
        self.sent.append((topic, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_every_record_a_reader_rejects_reaches_the_error_topic_without_secrets() -> None:
    producer = Producer()
    topics = Topics(changes="changes", positions="positions", contacts="contacts", errors="errors")
    publisher = ChangePublisher(producer, topics=topics, forest="f")
    rejected = (
        RejectedRecord(reason="no entryUUID", raw=orjson.dumps({"cn": ["a"], "userPassword": [HASH]}), position="1"),
        RejectedRecord(reason="bad", raw=orjson.dumps({"reqMod": [f"userPassword:= {HASH}"]}), position="2"),
    )
    await publisher.publish(ReadBatch(changes=(), rejected=rejected, position="2"))
    assert [topic for topic, _ in producer.sent] == ["errors", "errors"]
    assert not [value for _, value in producer.sent if HASH.encode() in value]
