"""The metaverse engine end to end through the real parts (slapd forests -> Kafka -> faust ->
slapd central): people joined across forests, central forest first, GAL objects, drift
correction, conflicts, the delete breaker, and two workers in one consumer group."""

from __future__ import annotations

import asyncio

import ldap3
import pytest
from streams.kafka.compacted import latest_values
from streams.metaverse_events import Conflict, DeleteRequest
from tests.integration.gal import GalDeployment, entries, eventually
from tests.integration.test_gal_sync import read_all, wait_until_running

pytestmark = pytest.mark.integration

SYNC = 10.0


def contacts_by_mail(gal: GalDeployment) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for dn, entry in gal.contacts().items():
        found.setdefault(entry.get("mail", [""])[0].strip().lower(), []).append({"dn": dn, **entry})
    return found


def cns(gal: GalDeployment, forest: str | None = None) -> list[str]:
    return sorted(entry["cn"][0] for entry in gal.contacts(forest).values())


def open_conflicts(gal: GalDeployment) -> dict[str, Conflict]:
    values = asyncio.run(latest_values(gal.broker.bootstrap_servers, gal.topology.kafka.topics.conflicts))
    latest = {k.decode(): Conflict.from_bytes(v) for k, v in values.items()}
    return {k: c for k, c in latest.items() if c.open}


def held_deletes(gal: GalDeployment) -> dict[str, DeleteRequest]:
    values = asyncio.run(latest_values(gal.broker.bootstrap_servers, gal.topology.kafka.topics.held_deletes))
    return {k.decode(): DeleteRequest.from_bytes(v) for k, v in values.items()}


def dead_letters(gal: GalDeployment) -> list:
    return asyncio.run(read_all(gal.broker.bootstrap_servers, gal.topology.kafka.topics.errors, at_least=1, timeout=2))


@pytest.mark.metaverse(precedence={"default": ["forest-a", "forest-b"], "attributes": {"displayName": ["forest-b"]}})
def test_one_person_in_two_forests_is_one_contact_until_both_sources_are_gone(gal: GalDeployment) -> None:
    wait_until_running(gal)
    ada_a = gal.add_user("forest_a", "ada", displayName="Ada from A", mail="Ada@corp.test")
    ada_b = gal.add_user("forest_b", "ada.b", displayName="Ada from B", mail="ada@CORP.test ")
    eventually(lambda: (c := contacts_by_mail(gal).get("ada@corp.test")) and c[0]["displayname"] == ["Ada from B"],
               timeout=SYNC, what="one contact with B's display name")
    gal.wait_until_processed()
    [contact] = contacts_by_mail(gal)["ada@corp.test"]
    # In forest-a's OU, named by forest-a's cn (default precedence), displayName from forest-b.
    assert contact["dn"] == f"cn=ada,{gal.contacts_ou('forest_a')}"

    gal.delete("forest_a", ada_a)
    eventually(lambda: (c := contacts_by_mail(gal).get("ada@corp.test")) and c[0]["dn"].startswith("cn=ada.b,"),
               timeout=SYNC, what="the contact falls back to forest-b")
    assert len(contacts_by_mail(gal)["ada@corp.test"]) == 1
    assert contacts_by_mail(gal)["ada@corp.test"][0]["dn"] == f"cn=ada.b,{gal.contacts_ou('forest_b')}"
    gal.delete("forest_b", ada_b)
    eventually(lambda: "ada@corp.test" not in contacts_by_mail(gal), timeout=SYNC, what="contact deleted")


def test_central_users_get_no_contact_mail_enabled_groups_and_contacts_do_and_no_mail_none(gal: GalDeployment) -> None:
    gal.add_entry("central", "uid=carol", ["top", "person", "organizationalPerson", "inetOrgPerson"],
                  uid="carol", cn="carol", sn="C", mail="carol@corp.test")
    gal.add_user("forest_a", "carol", displayName="Carol", mail="Carol@corp.test")
    gal.add_group("forest_a", "team", displayName="The Team", mail="team@corp.test")
    gal.add_contact("forest_a", "partner", displayName="A Partner", mail="partner@other.test")
    gal.add_entry("forest_a", "uid=nomail", ["top", "person", "organizationalPerson", "inetOrgPerson"],
                  uid="nomail", cn="nomail", sn="N", displayName="No Mail")
    wait_until_running(gal)
    gal.wait_until_processed()
    assert cns(gal) == ["before.start", "partner", "team"]
    team = gal.contacts("forest_a")[f"cn=team,{gal.contacts_ou('forest_a')}"]
    assert team["sn"] == ["team"] and team["msrtcsip-primaryuseraddress"] == ["sip:team@corp.test"]


def test_delete_and_immediate_re_add_of_fifty_users_ends_with_fifty_contacts(gal: GalDeployment) -> None:
    wait_until_running(gal)
    dns = [gal.add_user("forest_a", f"u{n:02d}", displayName=f"User {n}") for n in range(50)]
    eventually(lambda: len(gal.contacts("forest_a")) == 51, timeout=30, what="51 contacts")
    with gal.connection("forest_a") as connection:
        for n, dn in enumerate(dns):
            connection.delete(dn)
            connection.add(dn, ["top", "person", "organizationalPerson", "inetOrgPerson"],
                           {"uid": f"u{n:02d}", "cn": f"u{n:02d}", "sn": "x", "mail": f"u{n:02d}@forest_a.test",
                            "displayName": f"User {n} again"})
    gal.wait_until_processed(timeout=60)
    contacts = gal.contacts("forest_a")
    assert sorted(c["cn"][0] for c in contacts.values()) == ["before.start"] + [f"u{n:02d}" for n in range(50)]
    assert all(c["displayname"][0].endswith("again") for c in contacts.values() if c["cn"][0] != "before.start")


def test_a_contact_edited_or_deleted_by_hand_is_corrected_within_ten_seconds(gal: GalDeployment) -> None:
    wait_until_running(gal)
    gal.add_user("forest_a", "ada", displayName="Ada")
    gal.add_user("forest_a", "bob", displayName="Bob")
    ou = gal.contacts_ou("forest_a")
    eventually(lambda: len(gal.contacts("forest_a")) == 3, timeout=SYNC, what="contacts")
    gal.wait_until_processed()
    bob_before = gal.contacts("forest_a")[f"cn=bob,{ou}"]
    with gal.connection("central") as connection:
        connection.modify(f"cn=ada,{ou}", {"displayName": [(ldap3.MODIFY_REPLACE, ["Vandalised"])],
                                           "description": [(ldap3.MODIFY_REPLACE, ["a note idsync leaves alone"])]})
        connection.delete(f"cn=bob,{ou}")
    eventually(lambda: gal.contacts("forest_a").get(f"cn=ada,{ou}", {}).get("displayname") == ["Ada"],
               timeout=10, what="managed attribute put back")
    bob = eventually(lambda: gal.contacts("forest_a").get(f"cn=bob,{ou}"), timeout=10, what="contact recreated")
    assert bob["idsyncanchor"] == bob_before["idsyncanchor"] and bob["mail"] == bob_before["mail"]
    assert gal.contacts("forest_a")[f"cn=ada,{ou}"]["description"] == ["a note idsync leaves alone"]


def test_two_objects_of_one_forest_with_one_mail_are_one_conflict_until_one_goes(gal: GalDeployment) -> None:
    wait_until_running(gal)
    gal.add_user("forest_a", "dup1", displayName="Dup One", mail="dup@corp.test")
    second = gal.add_user("forest_a", "dup2", displayName="Dup Two", mail="dup@corp.test")
    conflicts = eventually(lambda: open_conflicts(gal), timeout=SYNC, what="a conflict record")
    gal.wait_until_processed()
    [conflict] = open_conflicts(gal).values()
    assert conflict.kind == "same-forest" and "forest-a" in conflict.reason and len(conflict.parties) == 3
    assert len(contacts_by_mail(gal)["dup@corp.test"]) == 1 and conflicts
    listed = gal.idsync("conflicts")
    assert "same-forest" in listed and conflict.conflict_id in listed and "1 open conflict" in listed
    gal.delete("forest_a", second)
    eventually(lambda: not open_conflicts(gal), timeout=SYNC, what="the conflict resolved")
    assert "no open conflicts" in gal.idsync("conflicts")
    assert len(contacts_by_mail(gal)["dup@corp.test"]) == 1


@pytest.mark.metaverse(delete_breaker={"limit": 500, "window_seconds": 3600})
def test_deleting_600_users_with_a_limit_of_500_holds_100_until_approved_or_rejected(gal: GalDeployment) -> None:
    wait_until_running(gal)
    with gal.connection("forest_a") as connection:
        dns = []
        for n in range(600):
            dn = f"uid=m{n:03d},{gal.people('forest_a')}"
            connection.add(dn, ["top", "person", "organizationalPerson", "inetOrgPerson"],
                           {"uid": f"m{n:03d}", "cn": f"m{n:03d}", "sn": "x", "mail": f"m{n:03d}@corp.test"})
            dns.append(dn)
    eventually(lambda: len(gal.contacts("forest_a")) == 601, timeout=60, what="601 contacts")
    with gal.connection("forest_a") as connection:
        for dn in dns:
            connection.delete(dn)
    for n in range(100):  # other changes meanwhile
        gal.add_user("forest_b", f"new{n:03d}")
    eventually(lambda: len(held_deletes(gal)) == 100, timeout=60, what="100 held deletes")
    eventually(lambda: len(gal.contacts("forest_b")) == 100, timeout=30, what="the other changes flowed")
    gal.wait_until_processed(timeout=60)
    assert len(gal.contacts("forest_a")) == 101  # before.start and the 100 held
    held = sorted(held_deletes(gal))
    assert "100 held deletes" in gal.idsync("deletes", "--held")
    rejected = [arg for person in held[:40] for arg in ("--person", person)]
    assert "rejected 40 held deletes" in gal.idsync("deletes", "reject", *rejected)
    eventually(lambda: len(held_deletes(gal)) == 60, timeout=SYNC, what="40 rejected")
    assert "approved all 60 held deletes" in gal.idsync("deletes", "approve")
    eventually(lambda: len(gal.contacts("forest_a")) == 41, timeout=SYNC, what="60 approved deletes applied")
    gal.wait_until_processed()
    assert not held_deletes(gal) and len(gal.contacts("forest_a")) == 41


def test_two_workers_in_one_group_one_killed_end_equal_to_what_the_sources_say(gal: GalDeployment) -> None:
    wait_until_running(gal)
    gal.start_worker()
    expected: dict[str, str] = {"before.start@forest_a.test": "before.start"}
    for n in range(150):
        forest = "forest_a" if n % 3 else "forest_b"
        gal.add_user(forest, f"w{n:03d}", displayName=f"W {n}", mail=f"w{n:03d}@corp.test")
        expected[f"w{n:03d}@corp.test"] = f"W {n}"
        if n % 10 == 0:  # the same person in the other forest too
            other = "forest_b" if forest == "forest_a" else "forest_a"
            gal.add_user(other, f"x{n:03d}", displayName=f"X {n}", mail=f"W{n:03d}@corp.test")
        if n == 60:
            gal.workers[0].kill()
    gal.wait_until_processed(timeout=90)
    found = {mail: [c["displayname"][0] for c in group] for mail, group in contacts_by_mail(gal).items()}
    assert {mail: names for mail, names in found.items() if len(names) != 1} == {}
    # forest-a wins every attribute by default precedence; the rest is each user's own name.
    assert set(found) == set(expected)
    for n in range(0, 150, 10):
        assert found[f"w{n:03d}@corp.test"] == [f"X {n}" if n % 3 == 0 else f"W {n}"]
    assert not [letter for letter in dead_letters(gal)]


def test_contacts_made_before_the_first_start_are_adopted_not_doubled(gal: GalDeployment) -> None:
    ou = gal.contacts_ou("forest_a")
    # Made by hand (or by the old MIIS): one under another name with the same mail, one under the
    # very name idsync would give its person, without mail.
    gal.add_contact("central", "Ada (GAL)", ou=ou, mail="ada@corp.test", displayName="Ada (GAL)")
    gal.add_contact("central", "bob", ou=ou, displayName="Bob by hand")
    gal.add_user("forest_a", "ada", displayName="Ada", mail="ada@corp.test")
    gal.add_user("forest_a", "bob", displayName="Bob", mail="bob@corp.test")
    wait_until_running(gal)
    gal.wait_until_processed()
    central = entries(gal.directories["central"], ou, "(objectClass=contact)")
    assert sorted(central) == sorted(f"cn={name},{ou}" for name in ("ada", "before.start", "bob"))
    assert all(entry.get("idsyncanchor") for entry in central.values())
    assert central[f"cn=ada,{ou}"]["displayname"] == ["Ada"] and central[f"cn=bob,{ou}"]["mail"] == ["bob@corp.test"]
    assert not dead_letters(gal) and not open_conflicts(gal)


def test_two_people_with_one_name_in_one_ou_both_get_contacts(gal: GalDeployment) -> None:
    wait_until_running(gal)
    gal.add_user("forest_a", "john.1", cn="John Smith", displayName="John Smith", mail="john1@corp.test")
    gal.add_user("forest_a", "john.2", cn="John Smith", displayName="John Smith", mail="john2@corp.test")
    eventually(lambda: len(contacts_by_mail(gal)) == 3, timeout=SYNC, what="both contacts")
    gal.wait_until_processed()
    names = sorted(entry["cn"][0] for entry in gal.contacts("forest_a").values())
    assert names in (
        ["John Smith", "John Smith (john1@corp.test)", "before.start"],
        ["John Smith", "John Smith (john2@corp.test)", "before.start"],
    )
    assert not open_conflicts(gal) and not dead_letters(gal)


def test_a_name_that_needs_escaping_is_never_renamed_by_an_update(gal: GalDeployment) -> None:
    wait_until_running(gal)
    hard = 'Smith, Ada + "B" \\ #1'
    user = gal.add_user("forest_a", "ada.smith", cn=hard, displayName=hard, mail="ada.smith@corp.test")
    eventually(lambda: contacts_by_mail(gal).get("ada.smith@corp.test"), timeout=SYNC, what="contact")
    gal.modify("forest_a", user, displayName="Ada Smith")
    eventually(lambda: (c := contacts_by_mail(gal).get("ada.smith@corp.test")) and c[0]["displayname"] == ["Ada Smith"],
               timeout=SYNC, what="display name updated")
    gal.wait_until_processed()
    with gal.connection("central") as connection:
        connection.search("cn=accesslog", "(reqType=modrdn)", attributes=["reqDN"])
        renames = [e for e in connection.response if e.get("type") == "searchResEntry"
                   and gal.contacts_ou("forest_a").lower() in str(e["attributes"]["reqDN"]).lower()]
    assert renames == []
