"""Person sync's configuration: the `sites:` section of topology.yaml."""

import copy
from pathlib import Path

import pytest

from streams.config.metaverse import engine_settings
from streams.config.sites import DEFAULT_REPLICATE
from streams.config.topology import TopologyError, parse_topology
from tests.unit.test_topology_metaverse import BASE


def config(sites):
    data = copy.deepcopy(BASE)
    data["sites"] = sites
    return data


def errors(data):
    with pytest.raises(TopologyError) as raised:
        parse_topology(data)
    return list(raised.value.errors)


def test_no_sites_section_means_no_person_sync():
    topology = parse_topology(BASE)
    assert topology.sites is None and engine_settings(topology).profiles is None


def test_defaults_and_paths(tmp_path: Path):
    data = config({"stores": [{"name": "intranet", "url": "sites.db"},
                              {"name": "pg", "url": "postgresql://idsync@db:5432/sites", "password_env": "PG"}]})
    topology = parse_topology(data, source=tmp_path / "topology.yaml")
    intranet, pg = topology.sites.stores
    assert (intranet.location, intranet.engine, intranet.password) == (str(tmp_path / "sites.db"), "sqlite", None)
    assert (pg.engine, pg.password.env, pg.poll_interval_seconds) == ("postgresql", "PG", 1.0)
    policy = engine_settings(topology).profiles
    assert [r.template.placeholders for r in policy.logins] == [("userPrincipalName",), ("mail",)]
    assert policy.replicate == tuple(DEFAULT_REPLICATE.items())


def test_login_rules_for_some_forests_and_a_replicate_mapping():
    topology = parse_topology(config({
        "stores": [{"name": "s", "url": "sqlite:///var/lib/idsync/sites.db"}],
        "logins": ["{mail}", {"template": "ALPHA\\{sAMAccountName}", "forests": ["forest-a"]}],
        "replicate": {"title": "JobTitle", "wWWHomePage": "Picture"},
    }))
    assert topology.sites.stores[0].location == "/var/lib/idsync/sites.db"
    second = topology.sites.policy.logins[1]
    assert second.forests == frozenset({"forest-a"}) and second.template.render({"samaccountname": "ada"}) == "ALPHA\\ada"
    assert topology.sites.policy.replicate == (("title", "JobTitle"), ("wWWHomePage", "Picture"))


@pytest.mark.parametrize("sites, where, message", [
    ({}, "sites.stores", "required key is missing"),
    ({"stores": []}, "sites.stores", "at least one site store"),
    ({"stores": [{"name": "A!", "url": "x.db"}]}, "sites.stores[0].name", "lowercase"),
    ({"stores": [{"name": "a", "url": "x.db"}, {"name": "a", "url": "y.db"}]}, "sites.stores[1].name", "already"),
    ({"stores": [{"name": "a", "url": "x.db", "password_env": "P"}]}, "sites.stores[0].password_env", "only a postgresql"),
    ({"stores": [{"name": "a", "url": "postgresql://u:secret@h/db"}]}, "sites.stores[0].url", "must not hold a password"),
    ({"stores": [{"name": "a", "url": "x.db", "poll_interval_seconds": 0}]}, "sites.stores[0].poll_interval_seconds", "must be >"),
    ({"stores": [{"name": "a", "url": "x.db"}], "logins": []}, "sites.logins", "at least one rule"),
    ({"stores": [{"name": "a", "url": "x.db"}], "logins": ["CORP\\user"]}, "sites.logins[0].template", "placeholder"),
    ({"stores": [{"name": "a", "url": "x.db"}], "logins": ["{mail"]}, "sites.logins[0].template", "unbalanced"),
    ({"stores": [{"name": "a", "url": "x.db"}], "logins": [{"template": "{mail}", "forests": ["nope"]}]},
     "sites.logins[0].forests[0]", "no forest named 'nope'"),
    ({"stores": [{"name": "a", "url": "x.db"}], "replicate": {}}, "sites.replicate", "at least one property"),
    ({"stores": [{"name": "a", "url": "x.db"}], "replicate": {"title": "A", "mail": "a"}}, "sites.replicate.mail",
     "written from 'title' already"),
    ({"stores": [{"name": "a", "url": "x.db"}], "replicate": {"ti tle": "A"}}, "sites.replicate.ti tle",
     "not an LDAP attribute name"),
    ({"stores": [{"name": "a", "url": "x.db"}], "replicate": {"title": "Job Title"}}, "sites.replicate.title",
     "site property name"),
    ({"stores": [{"name": "a", "url": "x.db"}], "extra": 1}, "sites.extra", "unknown key"),
])
def test_every_mistake_is_reported_with_its_path(sites, where, message):
    found = errors(config(sites))
    assert any(error.startswith(f"{where}:") and message in error for error in found), found
