"""The metaverse engine end to end in memory: every message it sends is routed back by topic
and partition, in a random interleaving that keeps each partition's order (as Kafka does)."""

from __future__ import annotations

import random
import zlib
from collections import defaultdict

import pytest

from streams.events import ChangeOp, ContactState, DirectoryChange, Modification, ModOp, ObjectKind, ReaderCaughtUp
from streams.kafka.range_reader import Record
from streams.metaverse_events import Conflict, DeleteVerdict
from streams.processors.engine import MetaverseEngine
from streams.processors.stages import EngineContext, EngineSettings, EngineTopics
from streams.rules.connector_space import JoinPolicy
from streams.rules.gal import ExportPolicy, GalPolicy
from streams.rules.join import JoinRule
from streams.rules.person import Precedence
from streams.rules.profiles import ProfilePolicy
from streams.rules.templates import Template

PARTITIONS = 3
TOPICS = EngineTopics.internal(
    "t", changes="changes", contacts="contacts", conflicts="conflicts", held_deletes="held", errors="errors"
)
OU = {"a": "ou=a,ou=gal,dc=central", "b": "ou=b,ou=gal,dc=central"}


def settings(delete_limit: int = 100, profiles: ProfilePolicy | None = None) -> EngineSettings:
    return EngineSettings(
        topics=TOPICS,
        partitions=PARTITIONS,
        central_forest="central",
        join=JoinPolicy(rules=(JoinRule(attribute="mail", space="email"),), central_forest="central",
                        anchor_attribute="idsyncAnchor"),
        gal=GalPolicy(
            forests={name: ExportPolicy(contacts_ou=ou) for name, ou in OU.items()},
            precedence=Precedence(default=("a", "b"), per_attribute={"title": ("b", "a")}),
            object_classes=("top", "contact"),
            rdn_attribute="cn",
            rdn_source="displayName",
            attributes=(
                ("displayName", Template.parse("{displayName}")),
                ("mail", Template.parse("{mail}")),
                ("title", Template.parse("{title}")),
                ("msRTCSIP-PrimaryUserAddress", Template.parse("sip:{mail}")),
                ("msRTCSIP-UserEnabled", Template.parse("TRUE")),
            ),
            clash_suffix=Template.parse(" ({mail})"),
        ),
        delete_limit=delete_limit,
        delete_window_seconds=60.0,
        sweep_max_fraction=0.5,
        sweep_always_allowed=10,
        profiles=profiles,
    )


def partition_of(key: bytes) -> int:
    return zlib.crc32(key) % PARTITIONS


class Bus:
    """Topics as per-partition queues; the engine's tables as plain dicts."""

    def __init__(self, seed: int, delete_limit: int = 100, profiles: ProfilePolicy | None = None) -> None:
        self.rng = random.Random(seed)
        self.queues: dict[tuple[str, int], list[Record]] = defaultdict(list)
        self.out: dict[str, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        self.offsets: dict[tuple[str, int], int] = defaultdict(int)
        self.now = 1000.0
        self.context = EngineContext(
            settings=settings(delete_limit, profiles), send=self.send, partition_of=partition_of,
            space={}, index={}, persons={}, breaker={}, clock=lambda: self.now,
        )
        self.engine = MetaverseEngine(self.context)
        self.positions: dict[str, int] = defaultdict(int)

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        if topic in TOPICS.consumed():
            where = (topic, partition_of(key) if partition is None else partition)
            self.queues[where].append(Record(key, value, topic, where[1], self.offsets[where]))
            self.offsets[where] += 1
        else:
            self.out[topic].append((key, value))

    def change(self, forest: str, object_id: str, op: ChangeOp, kind=ObjectKind.USER, dn=None, **attrs) -> None:
        self.positions[forest] += 1
        change = DirectoryChange(
            forest=forest, object_id=object_id, op=op, kind=kind, dn=dn or f"cn={object_id},dc={forest}",
            attributes={k: (v,) for k, v in attrs.items()}, position=f"{self.positions[forest]:08d}",
            changed_at="2026-12-04T00:00:00Z",
        )
        key = change.key.encode()
        where = ("changes", partition_of(key))
        self.queues[where].append(Record(key, change.to_bytes(), "changes", where[1], self.offsets[where]))
        self.offsets[where] += 1

    def caught_up(self, forest: str) -> None:
        marker = ReaderCaughtUp(forest=forest, sent_at="2026-12-04T00:00:00Z").to_bytes()
        for partition in range(PARTITIONS):
            self.queues[("changes", partition)].append(Record(b"caught-up", marker, "changes", partition, 0))

    async def drain(self) -> None:
        while True:
            ready = [where for where, queue in self.queues.items() if queue]
            if not ready:
                return
            record = self.queues[self.rng.choice(ready)].pop(0)
            assert await self.engine.process(record) is None

    def contacts(self) -> dict[str, ContactState]:
        latest = {}
        for key, value in self.out["contacts"]:
            latest[key.decode()] = ContactState.from_bytes(value)
        return latest

    def present(self) -> list[ContactState]:
        return [c for c in self.contacts().values() if c.present]

    def open_conflicts(self) -> dict[str, Conflict]:
        latest = {}
        for key, value in self.out["conflicts"]:
            latest[key.decode()] = Conflict.from_bytes(value)
        return {k: c for k, c in latest.items() if c.open}


SEEDS = range(12)


@pytest.mark.parametrize("seed", SEEDS)
async def test_nothing_is_exported_before_the_central_forest_and_a_hand_made_contact_is_adopted(seed):
    bus = Bus(seed)
    bus.change("a", "u1", ChangeOp.ADD, displayName="Ada", mail="Ada@x.org")
    bus.change("a", "u2", ChangeOp.ADD, displayName="Bob", mail="bob@x.org")
    bus.change("central", "c1", ChangeOp.ADD, kind=ObjectKind.CONTACT, dn="cn=Ada (old),ou=gal,dc=central",
               displayName="Ada (old)", mail="ada@x.org")
    await bus.drain()
    assert bus.out["contacts"] == []
    bus.caught_up("central")
    await bus.drain()
    present = sorted(bus.present(), key=lambda c: c.dn)
    assert [c.dn for c in present] == ["cn=Ada,ou=a,ou=gal,dc=central", "cn=Bob,ou=a,ou=gal,dc=central"]
    assert present[0].adopt_dn == "cn=Ada (old),ou=gal,dc=central" and present[1].adopt_dn is None
    assert present[0].attributes["msRTCSIP-PrimaryUserAddress"] == ("sip:Ada@x.org",)


@pytest.mark.parametrize("seed", SEEDS)
async def test_one_person_across_forests_by_precedence_kept_until_both_sources_go(seed):
    bus = Bus(seed)
    bus.caught_up("central")
    bus.change("a", "u1", ChangeOp.ADD, displayName="Ada A", mail="ada@x.org", title="Lead")
    bus.change("b", "v1", ChangeOp.ADD, displayName="Ada B", mail="ADA@x.org", title="Engineer")
    await bus.drain()
    [contact] = bus.present()
    assert contact.dn == "cn=Ada A,ou=a,ou=gal,dc=central"
    assert contact.attributes["title"] == ("Engineer",) and contact.attributes["displayName"] == ("Ada A",)
    bus.change("a", "u1", ChangeOp.DELETE)
    await bus.drain()
    [contact] = bus.present()
    assert contact.dn == "cn=Ada B,ou=b,ou=gal,dc=central"
    bus.change("b", "v1", ChangeOp.DELETE)
    await bus.drain()
    assert bus.present() == [] and len(bus.contacts()) == 1


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_central_user_gets_no_contact_and_objects_without_mail_none_either(seed):
    bus = Bus(seed)
    bus.change("central", "cu", ChangeOp.ADD, displayName="Cy", mail="cy@x.org")
    bus.change("a", "u1", ChangeOp.ADD, displayName="Cy", mail="cy@x.org")
    bus.change("a", "u2", ChangeOp.ADD, displayName="No Mail")
    bus.change("a", "g1", ChangeOp.ADD, kind=ObjectKind.GROUP, displayName="Team", mail="team@x.org")
    bus.caught_up("central")
    await bus.drain()
    assert [c.dn for c in bus.present()] == ["cn=Team,ou=a,ou=gal,dc=central"]


@pytest.mark.parametrize("seed", SEEDS[:4])
async def test_deletes_over_the_limit_are_held_until_approved_or_rejected(seed):
    bus = Bus(seed, delete_limit=2)
    bus.caught_up("central")
    for n in range(5):
        bus.change("a", f"u{n}", ChangeOp.ADD, displayName=f"User {n}", mail=f"u{n}@x.org")
    await bus.drain()
    for n in range(5):
        bus.change("a", f"u{n}", ChangeOp.DELETE)
    bus.change("a", "new", ChangeOp.ADD, displayName="Newcomer", mail="new@x.org")
    await bus.drain()
    assert len(bus.present()) == 4  # 2 deleted, 3 held, the newcomer created meanwhile
    held = {k for k, v in bus.out["held"] if v is not None}
    assert len(held) == 3
    bus.queues[(TOPICS.deletes, 0)].append(
        Record(b"verdict", DeleteVerdict(approve=False, persons=(sorted(held)[0].decode(),)).to_bytes(), TOPICS.deletes, 0, 0))
    bus.queues[(TOPICS.deletes, 0)].append(Record(b"verdict", DeleteVerdict(approve=True).to_bytes(), TOPICS.deletes, 0, 1))
    await bus.drain()
    assert [c.dn for c in sorted(bus.present(), key=lambda c: c.dn)] == [
        "cn=Newcomer,ou=a,ou=gal,dc=central", f"cn=User {_name_of(bus, sorted(held)[0])},ou=a,ou=gal,dc=central"]


def _name_of(bus: Bus, person: bytes) -> str:
    return bus.contacts()[person.decode()].attributes["displayName"][0].removeprefix("User ")


@pytest.mark.parametrize("seed", SEEDS[:4])
async def test_a_contact_changed_or_deleted_by_hand_is_put_back(seed):
    bus = Bus(seed)
    bus.caught_up("central")
    bus.change("a", "u1", ChangeOp.ADD, displayName="Ada", mail="ada@x.org")
    await bus.drain()
    [contact] = bus.present()
    written = dict(contact.attributes)
    # The writer's contact, read back from the central forest, then edited by hand.
    bus.change("central", "k1", ChangeOp.ADD, kind=ObjectKind.CONTACT, dn=contact.dn,
               idsyncAnchor=contact.anchor, **{k: v[0] for k, v in written.items()})
    await bus.drain()
    sent = len(bus.out["contacts"])
    assert sent == 1  # the read-back matched: nothing to correct
    bus.change("central", "k1", ChangeOp.ADD, kind=ObjectKind.CONTACT, dn=contact.dn,
               idsyncAnchor=contact.anchor, **{**{k: v[0] for k, v in written.items()}, "displayName": "Vandal"})
    await bus.drain()
    assert len(bus.out["contacts"]) == 2 and bus.present()[0] == contact
    bus.change("central", "k1", ChangeOp.DELETE, kind=ObjectKind.CONTACT, dn=contact.dn)
    await bus.drain()
    assert len(bus.out["contacts"]) == 3 and bus.present()[0] == contact


@pytest.mark.parametrize("seed", SEEDS[:4])
async def test_two_objects_of_one_forest_with_one_mail_are_a_conflict_until_one_goes(seed):
    bus = Bus(seed)
    bus.caught_up("central")
    bus.change("a", "u1", ChangeOp.ADD, displayName="Ada", mail="ada@x.org")
    bus.change("a", "u2", ChangeOp.ADD, displayName="Ada Two", mail="ada@x.org")
    await bus.drain()
    assert len(bus.present()) == 1
    [conflict] = bus.open_conflicts().values()
    assert conflict.kind == "same-forest" and len(conflict.parties) == 3
    bus.change("a", "u2", ChangeOp.DELETE)
    await bus.drain()
    assert bus.open_conflicts() == {}


@pytest.mark.parametrize("seed", SEEDS)
async def test_delete_and_immediate_re_add_of_fifty_users_ends_with_fifty_contacts(seed):
    bus = Bus(seed)
    bus.caught_up("central")
    for n in range(50):
        bus.change("a", f"old{n}", ChangeOp.ADD, displayName=f"User {n}", mail=f"u{n}@x.org")
    await bus.drain()
    for n in range(50):
        bus.change("a", f"old{n}", ChangeOp.DELETE)
        bus.change("a", f"new{n}", ChangeOp.ADD, displayName=f"User {n}", mail=f"u{n}@x.org")
    await bus.drain()
    assert sorted(c.dn for c in bus.present()) == sorted(f"cn=User {n},ou=a,ou=gal,dc=central" for n in range(50))


def _snapshot_end(bus: Bus, forest: str, snapshot_id: str, high_water: str, **fields) -> None:
    from streams.events import SnapshotMarker, SnapshotPhase

    marker = SnapshotMarker(forest=forest, snapshot_id=snapshot_id, phase=SnapshotPhase.END, high_water=high_water, **fields)
    for partition in range(PARTITIONS):
        bus.queues[("changes", partition)].append(Record(b"a/snapshot", marker.to_bytes(), "changes", partition, 0))


def _resnapshot(bus: Bus, object_id: str, snapshot_id: str) -> None:
    from dataclasses import replace

    bus.positions["a"] += 1
    change = DirectoryChange(
        forest="a", object_id=object_id, op=ChangeOp.ADD, kind=ObjectKind.USER, dn=f"cn={object_id},dc=a",
        attributes={"displayName": (object_id,), "mail": (f"{object_id}@x.org",)},
        position=f"{bus.positions['a']:08d}", changed_at="2026-12-04T00:00:00Z",
    )
    change = replace(change, snapshot_id=snapshot_id)
    key = change.key.encode()
    bus.queues[("changes", partition_of(key))].append(Record(key, change.to_bytes(), "changes", partition_of(key), 0))


async def test_a_snapshot_end_sweeps_what_it_did_not_contain_and_its_contacts_go():
    bus = Bus(1)
    bus.caught_up("central")
    for n in range(4):
        bus.change("a", f"u{n}", ChangeOp.ADD, displayName=f"u{n}", mail=f"u{n}@x.org")
    await bus.drain()
    assert len(bus.present()) == 4
    for n in (0, 1, 2):
        _resnapshot(bus, f"u{n}", "s1")
    await bus.drain()
    _snapshot_end(bus, "a", "s1", high_water=f"{bus.positions['a']:08d}", objects=3)
    await bus.drain()
    assert sorted(c.dn for c in bus.present()) == [f"cn=u{n},ou=a,ou=gal,dc=central" for n in (0, 1, 2)]


async def test_a_sweep_over_the_mass_delete_guard_holds_its_contact_deletes_for_an_operator():
    from dataclasses import replace

    bus = Bus(2)
    bus.context.settings = replace(bus.context.settings, sweep_max_fraction=0.1, sweep_always_allowed=0)
    bus.engine = MetaverseEngine(bus.context)
    bus.caught_up("central")
    for n in range(6):
        bus.change("a", f"u{n}", ChangeOp.ADD, displayName=f"u{n}", mail=f"u{n}@x.org")
    await bus.drain()
    _snapshot_end(bus, "a", "empty-ou", high_water="99999999")
    await bus.drain()
    # Far under the breaker's limit of 100, yet every delete of the sweep is held.
    held = {key for key, value in latest_out(bus, "held").items() if value is not None}
    assert len(held) == 6 and len(bus.present()) == 6
    bus.queues[(TOPICS.deletes, 0)].append(
        Record(b"verdict", DeleteVerdict(approve=True).to_bytes(), TOPICS.deletes, 0, 0))
    await bus.drain()
    assert bus.present() == []


def latest_out(bus: Bus, topic: str) -> dict[bytes, bytes | None]:
    return dict(bus.out[topic])


@pytest.mark.parametrize("seed", SEEDS[:4])
async def test_a_central_contact_made_by_the_writer_account_without_an_anchor_is_adopted(seed):
    from dataclasses import replace

    bus = Bus(seed)
    bus.change("a", "u1", ChangeOp.ADD, displayName="Ada", mail="ada@x.org")
    bus.positions["central"] += 1
    hand_made = DirectoryChange(
        forest="central", object_id="c1", op=ChangeOp.ADD, kind=ObjectKind.CONTACT, dn="cn=Old Ada,dc=central",
        attributes={"mail": ("ada@x.org",)}, position=f"{bus.positions['central']:08d}",
        changed_at="2026-12-04T00:00:00Z",
    )
    hand_made = replace(hand_made, written_by_idsync=True)  # the same administrator account as idsync's
    key = hand_made.key.encode()
    bus.queues[("changes", partition_of(key))].append(Record(key, hand_made.to_bytes(), "changes", partition_of(key), 0))
    bus.caught_up("central")
    await bus.drain()
    [contact] = bus.present()
    assert contact.adopt_dn == "cn=Old Ada,dc=central"


@pytest.mark.parametrize("seed", SEEDS[:6])
async def test_an_object_whose_values_belong_to_two_persons_is_a_conflict_until_its_values_change(seed):
    from dataclasses import replace

    bus = Bus(seed)
    rules = (JoinRule(attribute="mail", space="email"), JoinRule(attribute="employeeID", space="employee"))
    bus.context.settings = replace(bus.context.settings, join=replace(bus.context.settings.join, rules=rules))
    bus.engine = MetaverseEngine(bus.context)
    bus.caught_up("central")
    bus.change("b", "z", ChangeOp.ADD, displayName="Zed", mail="m1@x.org")
    bus.change("b", "w", ChangeOp.ADD, displayName="Wu", mail="wu@x.org", employeeID="E1")
    await bus.drain()
    bus.change("a", "x", ChangeOp.ADD, displayName="Ex", mail="M1@x.org", employeeID="e1")
    await bus.drain()
    [conflict] = bus.open_conflicts().values()
    assert conflict.kind == "join-ambiguous" and conflict.parties[0] == "a/x"
    # x stays with the person of its first rule's value: one contact for m1, one for Wu.
    assert sorted(c.attributes["mail"][0] for c in bus.present()) == ["M1@x.org", "wu@x.org"]
    bus.change("a", "x", ChangeOp.ADD, displayName="Ex", mail="M1@x.org", employeeID="e2")
    await bus.drain()
    assert bus.open_conflicts() == {}


async def test_a_held_delete_is_withdrawn_when_its_person_wants_a_contact_again():
    bus = Bus(5, delete_limit=1)
    bus.caught_up("central")
    for n in range(3):
        bus.change("a", f"u{n}", ChangeOp.ADD, displayName=f"User {n}", mail=f"u{n}@x.org")
    await bus.drain()
    for n in range(3):
        bus.change("a", f"u{n}", ChangeOp.DELETE)
    await bus.drain()
    held = {k for k, v in dict(bus.out["held"]).items() if v is not None}
    assert len(held) == 2 and len(bus.present()) == 2
    bus.change("b", "v0", ChangeOp.ADD, displayName="User 0", mail="u0@x.org")
    bus.change("b", "v1", ChangeOp.ADD, displayName="User 1", mail="u1@x.org")
    bus.change("b", "v2", ChangeOp.ADD, displayName="User 2", mail="u2@x.org")
    await bus.drain()
    assert {k for k, v in dict(bus.out["held"]).items() if v is not None} == set()
    assert len(bus.present()) == 3
    # Nothing held any more: once the window moved on, a delete passes again.
    bus.now += 61
    bus.change("b", "v0", ChangeOp.DELETE)
    await bus.drain()
    assert len(bus.present()) == 2


async def test_a_contact_written_before_people_were_joined_is_adopted_by_its_person():
    bus = Bus(7)
    bus.change("a", "u1", ChangeOp.ADD, displayName="Ada", mail="ada@x.org")
    # Its anchor is the user's forest/object_id, as the per-object engine wrote it: no person's.
    bus.change("central", "k1", ChangeOp.ADD, kind=ObjectKind.CONTACT, dn="cn=Ada,ou=a,ou=gal,dc=central",
               idsyncAnchor="a/u1", mail="ada@x.org", displayName="Ada")
    bus.caught_up("central")
    await bus.drain()
    [contact] = bus.present()
    assert contact.adopt_dn == "cn=Ada,ou=a,ou=gal,dc=central"


async def test_export_all_derives_every_contact_again_with_the_rules_in_force():
    from dataclasses import replace

    from streams.metaverse_events import ExportAll

    bus = Bus(3)
    bus.caught_up("central")
    for n in range(4):
        bus.change("a", f"u{n}", ChangeOp.ADD, displayName=f"User {n}", mail=f"u{n}@x.org")
    await bus.drain()
    sent = len(bus.out["contacts"])
    request = ExportAll(requested_at="2026-12-04T00:00:00+00:00").to_bytes()
    for partition in range(PARTITIONS):
        bus.queues[(TOPICS.persons, partition)].append(Record(b"export-all", request, TOPICS.persons, partition, 0))
    await bus.drain()
    assert len(bus.out["contacts"]) == sent  # same rules: nothing changed, nothing sent
    gal = bus.context.settings.gal
    new_rules = replace(gal, attributes=(*gal.attributes, ("description", Template.parse("from {mail}"))))
    bus.context.settings = replace(bus.context.settings, gal=new_rules)
    bus.engine = MetaverseEngine(bus.context)
    for partition in range(PARTITIONS):
        bus.queues[(TOPICS.persons, partition)].append(Record(b"export-all", request, TOPICS.persons, partition, 0))
    await bus.drain()
    assert len(bus.out["contacts"]) == sent + 4
    assert all(c.attributes["description"] == (f"from {c.attributes['mail'][0]}",) for c in bus.present())


async def test_an_object_swept_by_mistake_comes_back_whole_with_its_next_change():
    from dataclasses import replace

    bus = Bus(4)
    bus.context.settings = replace(bus.context.settings, sweep_max_fraction=0.1, sweep_always_allowed=0)
    bus.engine = MetaverseEngine(bus.context)
    bus.caught_up("central")
    for n in range(3):
        bus.change("a", f"u{n}", ChangeOp.ADD, displayName=f"u{n}", mail=f"u{n}@x.org", title="Engineer")
    await bus.drain()
    _snapshot_end(bus, "a", "wrong-base-dn", high_water="99999999")  # over the guard: deletes held
    await bus.drain()
    bus.queues[(TOPICS.deletes, 0)].append(
        Record(b"verdict", DeleteVerdict(approve=False).to_bytes(), TOPICS.deletes, 0, 0))
    await bus.drain()
    assert len(bus.present()) == 3
    # The objects exist after all: a modification of one attribute finds every other one kept.
    bus.positions["a"] = 100000000
    change = DirectoryChange(
        forest="a", object_id="u1", op=ChangeOp.MODIFY, kind=ObjectKind.USER, dn="cn=u1,dc=a",
        modifications=(Modification(attribute="title", op=ModOp.REPLACE, values=("Lead",)),),
        position="100000001", changed_at="2026-12-04T00:00:00Z",
    )
    key = change.key.encode()
    bus.queues[("changes", partition_of(key))].append(Record(key, change.to_bytes(), "changes", partition_of(key), 0))
    await bus.drain()
    contact = next(c for c in bus.present() if c.attributes["mail"] == ("u1@x.org",))
    assert contact.attributes["title"] == ("Lead",) and contact.attributes["displayName"] == ("u1",)
