"""Pure parts of the site store: tokens, property diffs, migrations on disk, the event schema."""

from pathlib import Path

import pytest

from connectors.sites.migrations import migrations_for
from connectors.sites.store import (
    classify_token,
    dump_properties,
    load_properties,
    parse_token,
    property_changes,
    token_text,
)
from streams.contracts import FullReadReason, PermanentError
from streams.events import EventDecodeError
from streams.site_events import MembershipOp, SiteMembershipChange


@pytest.mark.parametrize(("token", "expected"), [
    (None, FullReadReason.NO_TOKEN),
    ("4", FullReadReason.EXPIRED),
    ("5", None),
    ("7", None),
    ("9", None),
    ("10", FullReadReason.RESTORED),
    ("x1", FullReadReason.EXPIRED),
    ("-1", FullReadReason.EXPIRED),
])
def test_a_token_is_read_from_only_within_the_retained_log(token: str | None, expected: FullReadReason | None) -> None:
    assert classify_token(token, floor=5, newest=9) is expected


def test_tokens_are_decimal_counters_with_the_time_of_their_change() -> None:
    assert parse_token("12") == (12, None)
    assert parse_token(token_text(12, "2026-12-04T10:00:00.000001+00:00")) == (12, "2026-12-04T10:00:00.000001+00:00")
    assert token_text(0, None) == "0"
    assert parse_token("١٢") is None  # Unicode digits are not ours
    assert parse_token("12@") is None


def test_a_token_whose_counter_names_another_change_is_of_a_restored_store() -> None:
    """Restored from a backup, then written past the token: the counter is held again, by a
    change made after the restore."""
    before, after = "2026-12-04T10:00:00.000001+00:00", "2026-12-04T11:00:00.000002+00:00"
    token = token_text(7, before)
    assert classify_token(token, floor=5, newest=9, stamp_held=before) is None
    assert classify_token(token, floor=5, newest=9, stamp_held=after) is FullReadReason.RESTORED
    # A pruned change (at the floor) or a bare counter (an older idsync's) cannot be checked.
    assert classify_token(token_text(5, before), floor=5, newest=9, stamp_held=None) is None
    assert classify_token("7", floor=5, newest=9, stamp_held=after) is None


def test_only_differing_properties_change() -> None:
    assert property_changes({"title": "a", "mail": "m"}, {"title": "a", "department": "d"}) == {"department": "d"}
    assert property_changes({"title": "a"}, {"title": "a"}) == {}


def test_stored_properties_do_not_depend_on_key_order() -> None:
    assert dump_properties({"b": "2", "a": "1"}) == dump_properties({"a": "1", "b": "2"}) == '{"a":"1","b":"2"}'


def test_shipped_migrations_are_the_same_for_both_engines() -> None:
    for engine in ("sqlite", "postgresql"):
        migrations = migrations_for(engine)
        assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
        assert any("CREATE TABLE site_changes" in s for s in migrations[0].statements())


def test_an_engine_specific_migration_replaces_the_shared_one(tmp_path: Path) -> None:
    (tmp_path / "0001_initial.sql").write_text("CREATE TABLE a (x TEXT);\n-- a comment; with a semicolon\n")
    (tmp_path / "0002_more.sql").write_text("CREATE TABLE b (x TEXT);\nCREATE TABLE c (x TEXT);\n")
    (tmp_path / "0002_more.postgresql.sql").write_text("CREATE TABLE b (x JSONB);\n")
    assert [m.path.name for m in migrations_for("sqlite", tmp_path)] == ["0001_initial.sql", "0002_more.sql"]
    postgres = migrations_for("postgresql", tmp_path)
    assert [m.path.name for m in postgres] == ["0001_initial.sql", "0002_more.postgresql.sql"]
    assert postgres[0].statements() == ["CREATE TABLE a (x TEXT)"]
    assert migrations_for("sqlite", tmp_path)[1].statements() == ["CREATE TABLE b (x TEXT)", "CREATE TABLE c (x TEXT)"]


def test_a_badly_named_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "initial.sql").write_text("")
    with pytest.raises(ValueError, match="not a migration file name"):
        migrations_for("sqlite", tmp_path)


def test_membership_change_round_trips() -> None:
    change = SiteMembershipChange(site="hr", member_login="i:0#.w|corp\\alice", op=MembershipOp.PROPERTIES_CHANGED,
                                  change_token="17", changed_at="2026-12-04T06:00:00+00:00",
                                  properties={"title": "Engineer"})
    raw = change.to_bytes()
    assert SiteMembershipChange.from_bytes(raw) == change
    assert b'"schema":"idsync.site-membership-change","version":1' in raw


@pytest.mark.parametrize("raw", [
    b'{"schema":"idsync.site-membership-change","version":2}',
    b'{"schema":"idsync.site-membership-change","version":1,"site":"s","member_login":"a","op":"renamed",'
    b'"change_token":"1","changed_at":"t","properties":{}}',
    b'{"schema":"idsync.site-membership-change","version":1,"site":"s","member_login":"a","op":"added",'
    b'"change_token":"1","changed_at":"t","properties":{"n":1}}',
])
def test_bad_membership_changes_are_refused(raw: bytes) -> None:
    with pytest.raises(EventDecodeError):
        SiteMembershipChange.from_bytes(raw)


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"title": 3}'])
def test_a_stored_row_that_is_not_an_object_of_strings_is_the_sites_problem(text: str) -> None:
    with pytest.raises(PermanentError, match="stored member properties"):
        load_properties(text)
