"""The metaverse engine's configuration: the `metaverse:` section, the user forests' export keys,
contacts.clash_suffix, the engine's topics, and the EngineSettings built from a topology."""

import copy
import dataclasses
from pathlib import Path

import pytest

from streams.config.metaverse import engine_settings
from streams.config.topology import TopologyError, load_topology, parse_topology
from streams.events import ANCHOR_ATTRIBUTE, ObjectKind
from streams.rules.gal import ExportPolicy
from streams.rules.join import JoinRule
from streams.rules.person import Precedence
from streams.rules.templates import Template

REPO_TOPOLOGY = Path(__file__).resolve().parents[2] / "topology.yaml"
ALL_KINDS = frozenset({ObjectKind.USER, ObjectKind.GROUP, ObjectKind.CONTACT})


def _forest(name, role, **extra):
    forest = {
        "name": name, "role": role, "url": f"ldap://{name}.example:389", "base_dn": f"dc={name},dc=test",
        "bind_dn": f"cn=admin,dc={name},dc=test", "password_env": "IDSYNC_PASSWORD", **extra,
    }
    if role == "user":
        forest.setdefault("contacts_ou", f"ou={name},ou=gal,dc=central,dc=test")
    return forest


BASE = {
    "kafka": {"bootstrap_servers": "127.0.0.1:19092"},
    "forests": [_forest("central", "central"), _forest("forest-a", "user"), _forest("forest-b", "user")],
    "contacts": {"attributes": {"mail": "{mail}"}},
}


def config(metaverse=None, **forest_keys):
    """BASE with a metaverse section and keys set on forests, e.g. forest_1={"export_kinds": [...]}."""
    data = copy.deepcopy(BASE)
    if metaverse is not None:
        data["metaverse"] = metaverse
    for key, changes in forest_keys.items():
        data["forests"][int(key.removeprefix("forest_"))].update(changes)
    return data


def errors(data):
    with pytest.raises(TopologyError) as raised:
        parse_topology(data)
    return list(raised.value.errors)


def test_defaults():
    topology = parse_topology(BASE)

    assert topology.metaverse.join == (
        JoinRule(attribute="mail", space="email"),
        JoinRule(attribute="proxyAddresses", space="email", prefix="smtp:"),
    )
    assert topology.metaverse.precedence == Precedence(default=("forest-a", "forest-b"), per_attribute={})
    assert (topology.metaverse.delete_breaker.limit, topology.metaverse.delete_breaker.window_seconds) == (500, 3600.0)
    assert [(f.export_kinds, f.export_without_mail) for f in topology.user_forests] == [(ALL_KINDS, False)] * 2
    assert topology.contacts.clash_suffix == Template.parse(" ({mail})")
    assert (topology.kafka.topics.conflicts, topology.kafka.topics.held_deletes) == (
        "idsync.conflicts", "idsync.held-deletes")


def test_a_full_example():
    data = config(
        metaverse={
            "join": [
                {"attribute": "mail", "space": "email"},
                {"attribute": "proxyAddresses", "space": "email", "prefix": "SMTP:"},
                {"attribute": "employeeID"},
            ],
            "precedence": {"default": ["forest-b", "forest-a"], "attributes": {"Title": ["forest-a"]}},
            "delete_breaker": {"limit": 20, "window_seconds": 60},
        },
        forest_1={"export_kinds": ["user"], "export_without_mail": True},
    )
    data["kafka"]["topics"] = {"conflicts": "gal.conflicts", "held_deletes": "gal.held"}
    data["contacts"]["clash_suffix"] = " - {company}"
    topology = parse_topology(data)

    assert topology.metaverse.join == (
        JoinRule(attribute="mail", space="email"),
        JoinRule(attribute="proxyAddresses", space="email", prefix="SMTP:"),
        JoinRule(attribute="employeeID", space="employeeid"),
    )
    # Per-attribute keys are lower-cased, as the engine looks them up.
    assert topology.metaverse.precedence == Precedence(default=("forest-b", "forest-a"),
                                                       per_attribute={"title": ("forest-a",)})
    assert topology.metaverse.precedence.ranking("title") == ("forest-a", "forest-b")
    assert (topology.metaverse.delete_breaker.limit, topology.metaverse.delete_breaker.window_seconds) == (20, 60.0)
    forest_a, forest_b = topology.user_forests
    assert (forest_a.export_kinds, forest_a.export_without_mail) == (frozenset({ObjectKind.USER}), True)
    assert (forest_b.export_kinds, forest_b.export_without_mail) == (ALL_KINDS, False)
    assert topology.contacts.clash_suffix.render({"company": "B Corp"}) == " - B Corp"
    assert (topology.kafka.topics.conflicts, topology.kafka.topics.held_deletes) == ("gal.conflicts", "gal.held")


def test_precedence_ranks_the_forests_a_list_leaves_out_last_in_file_order():
    data = config(metaverse={"precedence": {"default": ["forest-b"]}})
    assert parse_topology(data).metaverse.precedence.default == ("forest-b", "forest-a")


def test_the_metaverse_values_are_frozen():
    topology = parse_topology(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.metaverse.delete_breaker.limit = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        topology.metaverse.precedence.per_attribute["title"] = ("forest-a",)  # type: ignore[index]


@pytest.mark.parametrize(
    ("metaverse", "path", "message"),
    [
        ("yes", "metaverse", "expected a mapping, got a string"),
        ({"joins": []}, "metaverse.joins", "unknown key (did you mean join?)"),
        ({"join": []}, "metaverse.join", "must list at least one rule"),
        ({"join": {"attribute": "mail"}}, "metaverse.join", "expected a list of join rules, got a mapping"),
        ({"join": ["mail"]}, "metaverse.join[0]", "expected a mapping, got a string"),
        ({"join": [{"space": "email"}]}, "metaverse.join[0].attribute", "required key is missing"),
        ({"join": [{"attribute": "e mail"}]}, "metaverse.join[0].attribute", "not an LDAP attribute name"),
        ({"join": [{"attribute": "mail", "spaces": "x"}]}, "metaverse.join[0].spaces",
         "unknown key (did you mean space?)"),
        ({"join": [{"attribute": "mail", "space": "E-Mail"}]}, "metaverse.join[0].space",
         "must be lowercase letters, digits"),
        ({"join": [{"attribute": "mail", "space": "a:b"}]}, "metaverse.join[0].space", "'<space>:<value>'"),
        ({"join": [{"attribute": "mail", "prefix": ""}]}, "metaverse.join[0].prefix", "must not be empty"),
        ({"join": [{"attribute": "mail", "prefix": 7}]}, "metaverse.join[0].prefix", "expected a string"),
        ({"join": [{"attribute": "mail"}, {"attribute": "Mail"}]}, "metaverse.join[1]",
         "same rule as metaverse.join[0]"),
        ({"precedence": {"default": ["forest-a", "forest-c"]}}, "metaverse.precedence.default[1]",
         "unknown user forest 'forest-c'; user forests: forest-a, forest-b"),
        ({"precedence": {"default": ["central"]}}, "metaverse.precedence.default[0]",
         "'central' is the central forest; precedence ranks the user forests"),
        ({"precedence": {"default": ["forest-a", "forest-a"]}}, "metaverse.precedence.default[1]",
         "'forest-a' is already ranked at metaverse.precedence.default[0]"),
        ({"precedence": {"default": [1]}}, "metaverse.precedence.default[0]", "expected a forest name, got an integer"),
        ({"precedence": {"default": []}}, "metaverse.precedence.default", "must name at least one user forest"),
        ({"precedence": {"default": "forest-a"}}, "metaverse.precedence.default",
         "expected a list of user forests, got a string"),
        ({"precedence": {"attributes": {"title": ["forest-x"]}}}, "metaverse.precedence.attributes.title[0]",
         "unknown user forest 'forest-x'"),
        ({"precedence": {"attributes": {"title": "forest-a"}}}, "metaverse.precedence.attributes.title",
         "expected a list of user forests"),
        ({"precedence": {"attributes": {"job title": ["forest-a"]}}}, "metaverse.precedence.attributes.job title",
         "not an LDAP attribute name"),
        ({"precedence": {"attributes": {"title": ["forest-a"], "Title": ["forest-b"]}}},
         "metaverse.precedence.attributes.Title", "same attribute as 'title'"),
        ({"precedence": {"attributes": ["title"]}}, "metaverse.precedence.attributes", "expected a mapping"),
        ({"precedence": {"order": []}}, "metaverse.precedence.order", "unknown key"),
        ({"delete_breaker": {"limit": 0}}, "metaverse.delete_breaker.limit", "must be >= 1 and <= 1000000, got 0"),
        ({"delete_breaker": {"window_seconds": 10**6}}, "metaverse.delete_breaker.window_seconds", "<= 604800"),
        ({"delete_breaker": {"limit": "many"}}, "metaverse.delete_breaker.limit", "expected an integer"),
        ({"delete_breaker": {"window_seconds": 0}}, "metaverse.delete_breaker.window_seconds", "must be > 0 and <= 604800, got 0"),
        ({"delete_breaker": {"window": 60}}, "metaverse.delete_breaker.window", "did you mean window_seconds?"),
    ],
)
def test_each_metaverse_error_is_reported_at_its_path(metaverse, path, message):
    reported = errors(config(metaverse=metaverse))
    assert [e for e in reported if e == f"{path}: {message}" or (e.startswith(f"{path}: ") and message in e)], reported


@pytest.mark.parametrize(
    ("forest_keys", "path", "message"),
    [
        ({"forest_1": {"export_kinds": ["user", "other"]}}, "forests[1].export_kinds[1]",
         "'other' objects never become contacts; exportable: user, group, contact"),
        ({"forest_1": {"export_kinds": ["users"]}}, "forests[1].export_kinds[0]", "unknown kind 'users'"),
        ({"forest_1": {"export_kinds": []}}, "forests[1].export_kinds", "must not be empty"),
        ({"forest_1": {"export_kinds": "user"}}, "forests[1].export_kinds", "expected a list, got a string"),
        ({"forest_1": {"object_kinds": ["user"], "export_kinds": ["user", "group"]}}, "forests[1].export_kinds[1]",
         "'group' is not in this forest's object_kinds"),
        ({"forest_1": {"export_without_mail": "yes"}}, "forests[1].export_without_mail",
         "expected true or false, got a string"),
        ({"forest_0": {"export_kinds": ["user"]}}, "forests[0].export_kinds", "not allowed on the central forest"),
        ({"forest_0": {"export_without_mail": False}}, "forests[0].export_without_mail",
         "not allowed on the central forest"),
        ({"forest_1": {"export_kind": ["user"]}}, "forests[1].export_kind", "did you mean export_kinds?"),
    ],
)
def test_each_export_error_is_reported_at_its_path(forest_keys, path, message):
    reported = errors(config(**forest_keys))
    assert [e for e in reported if e.startswith(f"{path}: ") and message in e], reported


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (" ({mail", "unbalanced '{' at position 2"),
        ("", "must not be empty"),
        (" (2)", "needs a placeholder such as ' ({mail})'"),
        (True, "expected a template string, got a boolean"),
    ],
)
def test_a_bad_clash_suffix_is_reported_at_its_path(suffix, message):
    data = config()
    data["contacts"]["clash_suffix"] = suffix
    reported = errors(data)
    assert [e for e in reported if e.startswith("contacts.clash_suffix: ") and message in e], reported


@pytest.mark.parametrize(
    ("topics", "path", "message"),
    [
        ({"conflicts": "idsync.errors"}, "kafka.topics.conflicts", "collides with kafka.topics.errors"),
        ({"held_deletes": "idsync_conflicts"}, "kafka.topics.held_deletes", "'.' and '_' as the same"),
        ({"held_deletes": "bad name!"}, "kafka.topics.held_deletes", "not a valid Kafka name"),
        ({"conflicts": "idsync-links"}, "kafka.topics.conflicts",
         "collides with the engine's internal links topic 'idsync-links' (named after streams.app_id)"),
    ],
)
def test_the_engine_topics_are_checked(topics, path, message):
    data = config()
    data["kafka"]["topics"] = topics
    reported = errors(data)
    assert [e for e in reported if e.startswith(f"{path}: ") and message in e], reported


def test_errors_of_every_section_are_reported_together():
    data = config(metaverse={"join": [{"attribute": "mail", "space": "E"}], "precedence": {"default": ["x"]}},
                  forest_0={"export_kinds": ["user"]})
    assert errors(data) == [
        "forests[0].export_kinds: not allowed on the central forest: contacts are exported from the user forests "
        "into it, never from it",
        "metaverse.join[0].space: must be lowercase letters, digits, '.', '_' or '-' (a join key is "
        "'<space>:<value>')",
        "metaverse.precedence.default[0]: unknown user forest 'x'; user forests: forest-a, forest-b",
    ]


def test_engine_settings_of_the_shipped_topology():
    topology = load_topology(REPO_TOPOLOGY)
    settings = engine_settings(topology)

    assert dataclasses.asdict(settings.topics) == {
        "changes": "idsync.directory-changes", "joins": "idsync-join-claims", "links": "idsync-links",
        "persons": "idsync-person-changes", "deletes": "idsync-delete-requests", "contacts": "idsync.central-contacts",
        "conflicts": "idsync.conflicts", "held_deletes": "idsync.held-deletes", "errors": "idsync.errors",
        "site_changes": "idsync.site-changes", "logins": "idsync-login-claims", "site_writes": "idsync.site-writes",
    }
    assert (settings.partitions, settings.central_forest) == (3, "central")
    assert settings.join.rules == (
        JoinRule(attribute="mail", space="email"),
        JoinRule(attribute="proxyAddresses", space="email", prefix="smtp:"),
    )
    assert (settings.join.central_forest, settings.join.anchor_attribute) == ("central", ANCHOR_ATTRIBUTE)
    assert dict(settings.gal.forests) == {
        "forest-a": ExportPolicy(contacts_ou="ou=forest-a,ou=gal-contacts,dc=central,dc=idsync,dc=test",
                                 kinds=ALL_KINDS, without_mail=False),
        "forest-b": ExportPolicy(contacts_ou="ou=forest-b,ou=gal-contacts,dc=central,dc=idsync,dc=test",
                                 kinds=ALL_KINDS, without_mail=False),
    }
    assert settings.gal.precedence == Precedence(default=("forest-a", "forest-b"), per_attribute={})
    assert settings.gal.object_classes == ("top", "person", "organizationalPerson", "contact")
    assert (settings.gal.rdn_attribute, settings.gal.rdn_source, settings.gal.mail_attribute) == ("cn", "cn", "mail")
    assert settings.gal.attributes == topology.contacts.attributes
    assert settings.gal.clash_suffix.render({"mail": "ann@a.test"}) == " (ann@a.test)"
    assert (settings.delete_limit, settings.delete_window_seconds) == (500, 3600.0)
    assert (settings.sweep_max_fraction, settings.sweep_always_allowed) == (0.25, 10)
