"""The contact writer against a real slapd central forest: adoption of existing contacts, names
for two people with one name, names held by foreign entries (blocked, reported on the conflicts
topic through the sink runner and real Kafka, applied once the blocker goes), and canonical DNs
(no rename in the central accesslog for an unchanged name that needs escaping)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connectors.ldap.contacts import LdapContactWriter
from idsync.rig import KafkaBroker, SlapdInstance
from idsync.rig.forests import reader_forest
from idsync.sample_data import ensure_ou
from streams.config.topology import Topics
from streams.contracts import Blocked
from streams.events import ContactState
from streams.metaverse_events import Conflict
from streams.processors.sink_runner import SinkRunner, open_dn_conflicts
from streams.rules.dn import escape_value, is_below, same_dn
from tests.conftest import Directories
from tests.integration.gal import entries

pytestmark = pytest.mark.integration

CONTACT_CLASSES = ["top", "person", "organizationalPerson", "contact"]


@dataclass
class Central:
    directory: SlapdInstance
    base: str
    ou: str
    writer: LdapContactWriter

    def ensure_contacts_ou(self) -> None:
        """For contacts made by hand; otherwise the writer creates it."""
        with self.directory.admin_connection(raise_exceptions=True) as connection:
            ensure_ou(connection, self.ou)

    def add(self, dn: str, object_classes: list[str], **attributes: str) -> None:
        with self.directory.admin_connection(raise_exceptions=True) as connection:
            connection.add(dn, object_classes, attributes)

    def delete(self, dn: str) -> None:
        with self.directory.admin_connection(raise_exceptions=True) as connection:
            connection.delete(dn)

    def contacts(self) -> dict[str, dict[str, list[str]]]:
        return entries(self.directory, self.ou, "(objectClass=contact)", ("*",))

    def contact(self, name: str) -> dict[str, list[str]] | None:
        return next((attrs for at, attrs in self.contacts().items() if same_dn(at, self.dn(name))), None)

    def dn(self, name: str) -> str:
        return f"cn={escape_value(name)},{self.ou}"

    def state(self, name: str, mail: str, *, anchor: str | None = None, **fields) -> ContactState:
        return ContactState(
            anchor=anchor or str(uuid.uuid4()), present=True, container_dn=self.ou, dn=self.dn(name),
            fallback_dn=self.dn(f"{name} ({mail})"), object_classes=tuple(CONTACT_CLASSES),
            attributes={"cn": (name,), "sn": (name,), "displayName": (name,), "mail": (mail,),
                        "targetAddress": (f"SMTP:{mail}",)},
            managed_attributes=("displayName", "mail", "sn", "targetAddress"), **fields,
        )


@pytest.fixture
def central(directories: Directories, unique_name: str, tmp_path: Path) -> Iterator[Central]:
    """A writer for this test's own OU of the central forest (its base DN); contacts go to ou=contacts below."""
    base = f"ou={unique_name},{directories.central.suffix}"
    with directories.central.admin_connection(raise_exceptions=True) as connection:
        ensure_ou(connection, base)
    forest = reader_forest(directories.central, base, tmp_path / "password", name="central", mode="accesslog-poll")
    writer = LdapContactWriter(dataclasses.replace(forest, role="central"))
    try:
        yield Central(directories.central, base, f"ou=contacts,{base}", writer)
    finally:
        writer.close()


def test_contact_named_by_adopt_dn_gets_the_anchor_and_is_renamed(central: Central) -> None:
    hand_made = central.dn("Lovelace, Ada (Sales)")
    central.ensure_contacts_ou()
    central.add(hand_made, CONTACT_CLASSES, cn="Lovelace, Ada (Sales)", sn="Lovelace", mail="old@x.org",
                description="kept: idsync does not manage it")
    state = central.state("Ada Lovelace", "ada@x.org", adopt_dn=hand_made)

    assert central.writer.apply_all([state]) == ["adopted+moved"]
    [(at, contact)] = central.contacts().items()
    assert same_dn(at, state.dn)
    assert contact["idsyncanchor"] == [state.anchor]
    assert contact["mail"] == ["ada@x.org"] and contact["displayname"] == ["Ada Lovelace"]
    assert contact["description"] == ["kept: idsync does not manage it"]
    assert central.writer.apply_all([state]) == ["unchanged"]


def test_contact_an_older_idsync_wrote_with_a_per_object_anchor_is_adopted(central: Central) -> None:
    old = central.dn("Ada Lovelace")
    central.ensure_contacts_ou()
    central.add(old, CONTACT_CLASSES, cn="Ada Lovelace", sn="Lovelace", mail="ada@x.org", idsyncAnchor="forest-a/1234")
    state = central.state("Ada Lovelace", "ada@x.org", adopt_dn=old)

    assert central.writer.apply_all([state]) in (["adopted"], ["adopted+updated"])
    [(at, contact)] = central.contacts().items()
    assert same_dn(at, old) and contact["idsyncanchor"] == [state.anchor]
    assert central.writer.apply_all([state]) == ["unchanged"]


def test_hand_made_contact_with_the_same_name_is_adopted(central: Central) -> None:
    central.ensure_contacts_ou()
    central.add(central.dn("Grace Hopper"), CONTACT_CLASSES, cn="Grace Hopper", sn="Hopper")
    state = central.state("Grace Hopper", "grace@x.org")

    assert central.writer.apply_all([state]) == ["adopted"]
    [(at, contact)] = central.contacts().items()
    assert same_dn(at, state.dn) and contact["idsyncanchor"] == [state.anchor]
    assert contact["mail"] == ["grace@x.org"] and contact["targetaddress"] == ["SMTP:grace@x.org"]
    assert central.writer.apply_all([state]) == ["unchanged"]


def test_another_persons_contact_holding_the_name_gives_the_fallback_name(central: Central) -> None:
    first = central.state("John Smith", "john.smith@x.org")
    second = central.state("John Smith", "j.smith@y.org")
    # One batch: the second contact's name is decided after the first one is written.
    assert central.writer.apply_all([first, second]) == ["created", "created"]
    assert central.writer.apply_all([first, second]) == ["unchanged", "unchanged"]

    anchors = {at: contact["idsyncanchor"] for at, contact in central.contacts().items()}
    assert len(anchors) == 2
    assert central.contact("John Smith")["idsyncanchor"] == [first.anchor]
    assert central.contact("John Smith (j.smith@y.org)")["idsyncanchor"] == [second.anchor]
    # The naming attribute holds the name used, once (AD's cn has a single value).
    assert central.contact("John Smith (j.smith@y.org)")["cn"] == ["John Smith (j.smith@y.org)"]

    # The first person goes: the second contact takes the plain name.
    assert central.writer.apply_all([dataclasses.replace(first, present=False)]) == ["deleted"]
    assert central.writer.apply_all([second]) == ["moved"]
    assert central.contact("John Smith")["idsyncanchor"] == [second.anchor]
    assert len(central.contacts()) == 1


def test_foreign_user_holding_the_name_blocks_the_contact_until_it_goes(central: Central) -> None:
    central.ensure_contacts_ou()
    user = central.dn("Alan Turing")
    central.add(user, ["top", "person", "organizationalPerson", "inetOrgPerson"], cn="Alan Turing", sn="Turing",
                uid="alan")
    state = central.state("Alan Turing", "alan@x.org")

    [result] = central.writer.apply_all([state])
    assert isinstance(result, Blocked)
    assert same_dn(result.dn, state.dn) and same_dn(result.blocker_dn, user)
    assert "inetorgperson" in result.reason
    assert central.contacts() == {}

    central.delete(user)
    assert central.writer.apply_all([state]) == ["created"]
    assert central.contact("Alan Turing")["idsyncanchor"] == [state.anchor]


def test_name_with_escapes_changed_in_display_name_only_writes_no_modrdn(central: Central) -> None:
    name = 'Smith, Ada + "B" \\ #1'
    state = central.state(name, "ada.smith@x.org")
    assert central.writer.apply_all([state]) == ["created"]
    [stored] = central.contacts()
    assert stored != state.dn and same_dn(stored, state.dn)  # slapd spells it its own way

    renamed = dataclasses.replace(state, attributes={**state.attributes, "displayName": ("Ada B. Smith",)})
    assert central.writer.apply_all([renamed]) == ["updated"]
    assert central.contact(name)["displayname"] == ["Ada B. Smith"]

    log = entries(central.directory, "cn=accesslog", "(|(reqType=modrdn)(reqType=modify))", ("reqType", "reqDN"))
    mine = [record for record in log.values() if is_below(record["reqdn"][0], central.ou)]
    assert [r["reqtype"] for r in mine] == [["modify"]], mine
    assert same_dn(mine[0]["reqdn"][0], state.dn)


# --- through the sink runner and real Kafka ------------------------------------------------------


@dataclass
class Pipeline:
    bootstrap: str
    topics: Topics
    group: str

    async def send(self, *states: ContactState) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            for state in states:
                await producer.send_and_wait(self.topics.contacts, state.to_bytes(), key=state.anchor.encode())
        finally:
            await producer.stop()

    async def committed(self) -> int | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.group)
        finally:
            await admin.close()
        found = offsets.get(TopicPartition(self.topics.contacts, 0))
        return found.offset if found is not None else None

    async def conflicts(self) -> list[Conflict]:
        """Every record of the conflicts topic, in order."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(self.topics.conflicts, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            records = []
            while await consumer.position(tp) < end:
                records += (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
            return [Conflict.from_bytes(record.value) for record in records]
        finally:
            await consumer.stop()

    async def run_sink(self, writer: LdapContactWriter) -> asyncio.Task:
        consumer = AIOKafkaConsumer(
            self.topics.contacts, bootstrap_servers=self.bootstrap, group_id=self.group,
            enable_auto_commit=False, auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        await consumer.start()
        runner = SinkRunner(
            writer, consumer=consumer, producer=producer, topics=self.topics, conflicts_topic=self.topics.conflicts,
            open_conflicts=lambda: open_dn_conflicts(self.bootstrap, self.topics.conflicts),
            retry_first_seconds=0.5, retry_max_seconds=1.0,
        )

        async def run() -> None:
            try:
                await runner.run()
            finally:
                await consumer.stop()
                await producer.stop()

        return asyncio.create_task(run())


@pytest.fixture
async def pipeline(kafka_broker: KafkaBroker, unique_name: str) -> Pipeline:
    topics = Topics(changes=f"{unique_name}.changes", positions=f"{unique_name}.positions",
                    contacts=f"{unique_name}.contacts", errors=f"{unique_name}.errors",
                    conflicts=f"{unique_name}.conflicts")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(topics.contacts, 1, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(topics.errors, 1, 1),
            NewTopic(topics.conflicts, 1, 1, topic_configs={"cleanup.policy": "compact"}),
        ])
    finally:
        await admin.close()
    return Pipeline(kafka_broker.bootstrap_servers, topics, f"{unique_name}-writer")


async def eventually_async(probe, *, timeout: float, what: str):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.1)


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_blocked_contact_is_reported_holds_the_commit_and_is_created_once_the_blocker_goes(
    central: Central, pipeline: Pipeline
) -> None:
    central.ensure_contacts_ou()
    user = central.dn("Alan Turing")
    central.add(user, ["top", "person", "organizationalPerson", "inetOrgPerson"], cn="Alan Turing", sn="Turing")
    blocked, free = central.state("Alan Turing", "alan@x.org"), central.state("Joan Clarke", "joan@x.org")
    await pipeline.send(blocked, free)  # offsets 0 and 1
    task = await pipeline.run_sink(central.writer)
    try:
        [opened] = await eventually_async(pipeline.conflicts, timeout=30, what="conflict opened")
        assert (opened.conflict_id, opened.kind, opened.open) == (f"dn:{blocked.anchor}", "dn-taken", True)
        assert opened.parties[0] == blocked.anchor and same_dn(opened.parties[1], user)
        await eventually_async(lambda: asyncio.to_thread(central.contact, "Joan Clarke"), timeout=10, what="free contact")
        # The record after the blocked one is applied, but the commit stays at the blocked one.
        await eventually_async(lambda: _equals(pipeline.committed(), 0), timeout=10, what="commit held at offset 0")
        await asyncio.sleep(2)  # two retries or more, still blocked: nothing new reported or committed
        assert len(await pipeline.conflicts()) == 1 and await pipeline.committed() == 0

        central.delete(user)
        created = await eventually_async(lambda: asyncio.to_thread(central.contact, "Alan Turing"), timeout=5,
                                         what="contact created once the blocker went")
        assert created["idsyncanchor"] == [blocked.anchor]
        conflicts = await eventually_async(lambda: _longer(pipeline.conflicts(), 1), timeout=5, what="conflict closed")
        assert [(c.conflict_id, c.open) for c in conflicts] == [(f"dn:{blocked.anchor}", True), (f"dn:{blocked.anchor}", False)]
        await eventually_async(lambda: _equals(pipeline.committed(), 2), timeout=10, what="commit advanced")
    finally:
        await stop(task)


async def test_blocked_record_is_applied_again_after_a_restart_and_its_conflict_closed(
    central: Central, pipeline: Pipeline
) -> None:
    central.ensure_contacts_ou()
    user = central.dn("Alan Turing")
    central.add(user, ["top", "person", "organizationalPerson", "inetOrgPerson"], cn="Alan Turing", sn="Turing")
    blocked, free = central.state("Alan Turing", "alan@x.org"), central.state("Joan Clarke", "joan@x.org")
    await pipeline.send(blocked, free)
    task = await pipeline.run_sink(central.writer)
    try:
        await eventually_async(pipeline.conflicts, timeout=30, what="conflict opened")
        await eventually_async(lambda: _equals(pipeline.committed(), 0), timeout=10, what="commit held at offset 0")
    finally:
        await stop(task)

    central.delete(user)  # while no writer runs
    task = await pipeline.run_sink(central.writer)
    try:
        created = await eventually_async(lambda: asyncio.to_thread(central.contact, "Alan Turing"), timeout=30,
                                         what="contact created after the restart")
        assert created["idsyncanchor"] == [blocked.anchor]
        conflicts = await eventually_async(lambda: _longer(pipeline.conflicts(), 1), timeout=10, what="conflict closed")
        assert [c.open for c in conflicts] == [True, False]
        await eventually_async(lambda: _equals(pipeline.committed(), 2), timeout=10, what="commit advanced")
    finally:
        await stop(task)
    assert len(central.contacts()) == 2


async def _equals(value, expected):
    return await value == expected


async def _longer(value, length: int):
    found = await value
    return found if len(found) > length else None
