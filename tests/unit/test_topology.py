import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from streams.config.security import Secret
from streams.config.topology import TopologyError, load_topology, parse_topology
from streams.events import ObjectKind
from streams.rules.templates import Placeholder, Template, TemplateError

# --- templates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("TRUE", ("TRUE",)),
        ("{mail}", (Placeholder(name="mail"),)),
        ("SMTP:{mail}", ("SMTP:", Placeholder(name="mail"))),
        ("{givenName} {sn}", (Placeholder(name="givenName"), " ", Placeholder(name="sn"))),
        ("{{literal}} {{{uid}}}", ("{literal} {", Placeholder(name="uid"), "}")),
        ("sip:{msRTCSIP-PrimaryUserAddress}", ("sip:", Placeholder(name="msRTCSIP-PrimaryUserAddress"))),
    ],
)
def test_template_parses_literals_placeholders_and_escapes(text, parts):
    assert Template.parse(text).parts == parts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{mail", "unbalanced '{' at position 0"),
        ("SMTP:mail}", "unbalanced '}' at position 9"),
        ("a{b{c}", "unbalanced '{' at position 1"),
        ("{}", "bad placeholder '{}' at position 0"),
        ("x{a.b}", "bad placeholder '{a.b}' at position 1"),
        ("{1mail}", "bad placeholder '{1mail}'"),
        ("{mail!r}", "bad placeholder '{mail!r}'"),
        ("", "empty template"),
    ],
)
def test_malformed_template_is_rejected_with_position(text, message):
    with pytest.raises(TemplateError, match="^" + message.replace("{", r"\{").replace("}", r"\}")):
        Template.parse(text)


def test_placeholders_in_first_use_order_without_repeats():
    assert Template.parse("{sn}, {givenName} <{sn}>").placeholders == ("sn", "givenName")
    assert Template.parse("TRUE").placeholders == ()


def test_render_fills_placeholders():
    assert Template.parse("SMTP:{mail}").render({"mail": "ann@a.test"}) == "SMTP:ann@a.test"
    assert Template.parse("{{{uid}}}").render({"uid": "ann"}) == "{ann}"


def test_constant_renders_without_any_attribute():
    assert Template.parse("TRUE").render({}) == "TRUE"


@pytest.mark.parametrize("values", [{}, {"mail": ""}, {"givenName": "Ann"}])
def test_missing_or_empty_attribute_renders_none(values):
    assert Template.parse("{givenName} {mail}").render(values) is None


def test_render_matches_attribute_names_ignoring_case():
    assert Template.parse("{displayName}").render({"displayname": "Ann Lee"}) == "Ann Lee"


# --- topology -------------------------------------------------------------------------------------

REPO_TOPOLOGY = Path(__file__).resolve().parents[2] / "topology.yaml"

MINIMAL = {
    "kafka": {"bootstrap_servers": "127.0.0.1:19092"},
    "forests": [
        {
            "name": "central",
            "role": "central",
            "url": "ldap://127.0.0.1:13891",
            "base_dn": "dc=central,dc=idsync,dc=test",
            "bind_dn": "cn=admin,dc=central,dc=idsync,dc=test",
            "password_env": "IDSYNC_CENTRAL_PASSWORD",
        },
        {
            "name": "forest-a",
            "role": "user",
            "url": "ldaps://a.example:636",
            "base_dn": "dc=forest-a,dc=idsync,dc=test",
            "bind_dn": "cn=admin,dc=forest-a,dc=idsync,dc=test",
            "password_file": "/run/secrets/forest-a",
            "contacts_ou": "ou=forest-a,ou=gal-contacts,dc=central,dc=idsync,dc=test",
        },
    ],
    "contacts": {"attributes": {"mail": "{mail}"}},
}


def config(**changes):
    """MINIMAL with changes keyed by dotted paths ("forests.1.url"); None deletes, "forests.2" appends."""
    data = copy.deepcopy(MINIMAL)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node.append(value)  # a new forest
        elif value is None:
            del node[last]
        else:
            node[last] = value
    return data


def errors(data):
    with pytest.raises(TopologyError) as raised:
        parse_topology(data)
    return list(raised.value.errors)


def test_repo_topology_loads():
    topology = load_topology(REPO_TOPOLOGY)

    assert topology.source == REPO_TOPOLOGY
    assert topology.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert topology.central.name == "central"
    assert topology.central.url == "ldap://127.0.0.1:13891"
    assert [(f.name, f.url) for f in topology.user_forests] == [
        ("forest-a", "ldap://127.0.0.1:13892"),
        ("forest-b", "ldap://127.0.0.1:13893"),
    ]
    forest_b = topology.forest("forest-b")
    assert forest_b.base_dn == "dc=forest-b,dc=idsync,dc=test"
    assert forest_b.bind_dn == "cn=admin,dc=forest-b,dc=idsync,dc=test"
    assert forest_b.contacts_ou == "ou=forest-b,ou=gal-contacts,dc=central,dc=idsync,dc=test"
    assert forest_b.password == Secret(env="IDSYNC_FOREST_B_PASSWORD")
    assert topology.central.contacts_ou is None
    assert dict(topology.contacts.attributes)["targetAddress"].render({"mail": "ann@a.test"}) == "SMTP:ann@a.test"
    assert dict(topology.contacts.attributes)["msRTCSIP-UserEnabled"].render({}) == "TRUE"


def test_defaults_fill_what_the_file_leaves_out():
    topology = parse_topology(MINIMAL)

    assert topology.source is None
    assert (topology.kafka.client_id, topology.kafka.partitions, topology.kafka.replication_factor) == ("idsync", 3, 1)
    assert dataclasses.asdict(topology.kafka.topics) == {
        "changes": "idsync.directory-changes",
        "positions": "idsync.reader-positions",
        "contacts": "idsync.central-contacts",
        "errors": "idsync.errors",
        "conflicts": "idsync.conflicts",
        "held_deletes": "idsync.held-deletes",
        "site_changes": "idsync.site-changes",
        "site_writes": "idsync.site-writes",
    }
    assert (topology.streams.app_id, topology.streams.commit_interval_seconds) == ("idsync", 1.0)
    capture = topology.central.change_capture
    assert (capture.mode, capture.poll_interval_seconds, capture.overlap_seconds, capture.accesslog_base) == (
        "accesslog-poll", 0.2, 2.0, "cn=accesslog")
    contacts = topology.contacts
    assert contacts.object_classes == ("top", "person", "organizationalPerson", "contact")
    assert (contacts.rdn_attribute, contacts.rdn_source) == ("cn", "cn")


def test_objects_are_frozen():
    topology = parse_topology(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.central.url = "ldap://elsewhere:389"  # type: ignore[misc]


def test_forest_lookup_by_name():
    topology = parse_topology(MINIMAL)
    assert topology.forest("forest-a").role == "user"
    with pytest.raises(KeyError, match="no forest named 'forest-z'.*central, forest-a"):
        topology.forest("forest-z")


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        # kafka and streams
        ({"kafka.bootstrap_servers": None}, "kafka.bootstrap_servers", "required key is missing"),
        ({"kafka.bootstrap_servers": "localhost"}, "kafka.bootstrap_servers", "expected host:port"),
        ({"kafka.bootstrap_servers": "a:1, b:2"}, "kafka.bootstrap_servers", "without spaces"),
        ({"kafka.bootstrap_servers": "a:70000"}, "kafka.bootstrap_servers", "expected host:port"),
        ({"kafka.partitions": "three"}, "kafka.partitions", "expected an integer, got a string"),
        ({"kafka.partitions": True}, "kafka.partitions", "expected an integer, got a boolean"),
        ({"kafka.partitions": 0}, "kafka.partitions", "must be >= 1 and <= 10000, got 0"),
        ({"kafka.partitions": 30000}, "kafka.partitions", "must be >= 1 and <= 10000, got 30000"),
        ({"kafka.replication_factor": 100}, "kafka.replication_factor", "<= 32, got 100"),
        ({"kafka.replication_factor": 0}, "kafka.replication_factor", "must be >= 1"),
        ({"kafka.topics.errors": "bad topic!"}, "kafka.topics.errors", "not a valid Kafka name"),
        ({"kafka.topics.errors": "x" * 250}, "kafka.topics.errors", "not a valid Kafka name"),
        ({"kafka.topics.errors": ".."}, "kafka.topics.errors", "not a valid Kafka name"),
        ({"kafka.topics.errors": "idsync.directory-changes"}, "kafka.topics.errors",
         "collides with kafka.topics.changes"),
        ({"kafka.topics.errors": "idsync_directory-changes"}, "kafka.topics.errors", "'.' and '_' as the same"),
        ({"kafka.topic": {}}, "kafka.topic", "unknown key (did you mean topics?)"),
        ({"streams.app_id": "id sync"}, "streams.app_id", "not a valid Kafka name"),
        ({"streams.commit_interval_seconds": 0}, "streams.commit_interval_seconds", "must be > 0 and <= 600, got 0"),
        ({"streams.commit_interval_seconds": "1s"}, "streams.commit_interval_seconds", "expected a number"),
        ({"streams.session_timeout_seconds": 2}, "streams.session_timeout_seconds", "must be >= 6 and <= 1800, got 2"),
        ({"streams.session_timeout_seconds": 3600}, "streams.session_timeout_seconds", "<= 1800, got 3600"),
        ({"streams.commit_interval_seconds": 3600}, "streams.commit_interval_seconds", "<= 600, got 3600"),
        ({"streams.sweep_max_fraction": 7}, "streams.sweep_max_fraction", "must be >= 0 and <= 1, got 7"),
        ({"streams.sweep_max_fraction": -0.1}, "streams.sweep_max_fraction", "must be >= 0 and <= 1"),
        ({"streams.sweep_always_allowed": -1}, "streams.sweep_always_allowed", "must be >= 0"),
        ({"streams.sweep_always_allowed": 10**9}, "streams.sweep_always_allowed", "<= 1000000"),
        ({"streams.producer_linger_ms": -1}, "streams.producer_linger_ms", "must be >= 0"),
        ({"streams.producer_linger_ms": 5000}, "streams.producer_linger_ms", "<= 1000"),
        ({"metavers": {}}, "metavers", "unknown key (did you mean metaverse?)"),
        ({"kafka": "localhost:9092"}, "kafka", "expected a mapping, got a string"),
        # forests
        ({"forests": None}, "forests", "required key is missing"),
        ({"forests": []}, "forests", "must list at least the central forest"),
        ({"forests": {"central": {}}}, "forests", "expected a list, got a mapping"),
        ({"forests.0.passwrd": "x"}, "forests[0].passwrd", "unknown key (did you mean password_env?)"),
        ({"forests.0.password": "x"}, "forests[0].password", "use password_env (an environment variable) or "
                                                             "password_file"),
        ({"forests.0.password_file": "/s"}, "forests[0]", "exactly one of password_env or password_file, not both"),
        ({"forests.0.password_env": None}, "forests[0]", "set exactly one of password_env or password_file"),
        ({"forests.0.password_env": "IDSYNC-PW"}, "forests[0].password_env", "not an environment variable name"),
        ({"forests.1.password_file": ""}, "forests[1].password_file", "must not be empty"),
        ({"forests.1.name": "Forest_A"}, "forests[1].name", "lowercase letters"),
        ({"forests.1.name": "a" * 64}, "forests[1].name", "1-63"),
        ({"forests.1.name": "central"}, "forests[1].name", "'central' is already used by forests[0]"),
        ({"forests.1.role": "admin"}, "forests[1].role", "unknown value 'admin'; known: user, central"),
        ({"forests.1.role": "central", "forests.1.contacts_ou": None}, "forests[1].role",
         "forests[0] is already central"),
        ({"forests.0.role": "user", "forests.0.contacts_ou": "ou=c,dc=central,dc=idsync,dc=test"}, "forests",
         "no forest has role central"),
        ({"forests.1.url": "http://a.example:80"}, "forests[1].url", "expected ldap://host:port or ldaps://host:port"),
        ({"forests.1.url": "ldap://a.example"}, "forests[1].url", "expected ldap://host:port"),
        ({"forests.1.url": "ldap://a.example:99999"}, "forests[1].url", "expected ldap://host:port"),
        ({"forests.1.url": "ldap://a.example:389/dc=a"}, "forests[1].url", "the base DN goes in base_dn"),
        ({"forests.1.base_dn": "forest-a"}, "forests[1].base_dn", "not a valid DN"),
        ({"forests.1.bind_dn": None}, "forests[1].bind_dn", "required key is missing"),
        ({"forests.1.change_capture": {"mode": "syncrepl"}}, "forests[1].change_capture.mode",
         "unknown value 'syncrepl'; known: accesslog-poll"),
        ({"forests.1.change_capture": {"poll_interval_seconds": 0}},
         "forests[1].change_capture.poll_interval_seconds", "must be > 0"),
        ({"forests.1.change_capture": {"poll_interval_seconds": 86400}},
         "forests[1].change_capture.poll_interval_seconds", "<= 3600, got 86400"),
        ({"forests.1.change_capture": {"overlap_seconds": 7200}}, "forests[1].change_capture.overlap_seconds",
         "<= 3600"),
        ({"forests.1.change_capture": {"mode": "generic-poll", "reconcile_interval_seconds": 10**7}},
         "forests[1].change_capture.reconcile_interval_seconds", "<= 604800"),
        ({"forests.1.change_capture": {"overlap_seconds": -0.5}}, "forests[1].change_capture.overlap_seconds",
         "must be >= 0"),
        ({"forests.1.change_capture": {"overlap_seconds": float("nan")}},
         "forests[1].change_capture.overlap_seconds", "must be >= 0"),
        ({"forests.1.change_capture": {"accesslog_base": "accesslog"}}, "forests[1].change_capture.accesslog_base",
         "not a valid DN"),
        ({"forests.1.contacts_ou": None}, "forests[1].contacts_ou", "required for a user forest"),
        ({"forests.0.contacts_ou": "ou=x,dc=central,dc=idsync,dc=test"}, "forests[0].contacts_ou",
         "not allowed on the central forest"),
        ({"forests.1.contacts_ou": "ou=forest-a,dc=forest-a,dc=idsync,dc=test"}, "forests[1].contacts_ou",
         "must be under the central forest's base_dn 'dc=central,dc=idsync,dc=test'"),
        ({"forests.1.contacts_ou": "dc=central,dc=idsync,dc=test"}, "forests[1].contacts_ou", "must be under"),
        ({"forests.1.contacts_ou": "ou=a,dc=central"}, "forests[1].contacts_ou", "must be under"),
        ({"forests.1.contacts_ou": "ou=a,,dc=central"}, "forests[1].contacts_ou", "not a valid DN"),
        ({"forests.2": {**MINIMAL["forests"][1], "name": "forest-b",
                        "contacts_ou": "OU=Forest-A, ou=gal-contacts,dc=Central,dc=idsync,dc=test"}},
         "forests[2].contacts_ou", "same OU as forests[1].contacts_ou"),
        # contacts
        ({"contacts": None}, "contacts.attributes", "required key is missing"),
        ({"contacts.attributes": {}}, "contacts.attributes", "must map at least one contact attribute"),
        ({"contacts.attributes": ["mail"]}, "contacts.attributes", "expected a mapping"),
        ({"contacts.object_classes": []}, "contacts.object_classes", "must not be empty"),
        ({"contacts.object_classes": ["top", "x y"]}, "contacts.object_classes[1]", "not an object class name"),
        ({"contacts.rdn_source": "given name"}, "contacts.rdn_source", "not an LDAP attribute name"),
        ({"contacts.rdn_attribute": 7}, "contacts.rdn_attribute", "expected a string, got an integer"),
        ({"contacts.attributes.proxy_addresses": "{mail}"}, "contacts.attributes.proxy_addresses",
         "not an LDAP attribute name"),
        ({"contacts.attributes": {7: "{uid}"}}, "contacts.attributes.7", "expected an attribute name, got an integer"),
        ({"contacts.attributes.CN": "{cn}"}, "contacts.attributes.CN", "renaming the contact (modrdn)"),
        ({"contacts.attributes.Mail": "{mail}"}, "contacts.attributes.Mail", "same attribute as 'mail'"),
        ({"contacts.attributes.objectClass": "contact"}, "contacts.attributes.objectClass",
         "set contacts.object_classes instead"),
        ({"contacts.attributes.msRTCSIP-UserEnabled": True}, "contacts.attributes.msRTCSIP-UserEnabled",
         "expected a template string, got a boolean (quote it"),
        ({"contacts.attributes.targetAddress": "SMTP:{mail"}, "contacts.attributes.targetAddress",
         "unbalanced '{' at position 5"),
        ({"contacts.attributes.targetAddress": "SMTP:{e-mail address}"}, "contacts.attributes.targetAddress",
         "bad placeholder '{e-mail address}'"),
    ],
)
def test_each_rule_reports_its_path_and_reason(changes, path, message):
    reported = errors(config(**changes))
    assert [e for e in reported if e.startswith(f"{path}: ") and message in e], reported


def test_a_mistyped_section_reports_once_not_once_per_missing_key():
    assert errors(config(**{"forests.2": "forest-b"})) == ["forests[2]: expected a mapping, got a string"]


def test_rdn_attribute_may_be_renamed_and_is_then_the_one_forbidden():
    topology = parse_topology(config(**{"contacts.rdn_attribute": "displayName", "contacts.attributes.cn": "{cn}"}))
    assert topology.contacts.rdn_attribute == "displayName"
    assert "contacts.attributes.displayName" in errors(config(**{"contacts.rdn_attribute": "displayName",
                                                                 "contacts.attributes.displayName": "{cn}"}))[0]


def test_every_error_is_reported_at_once_prefixed_with_the_file(tmp_path):
    path = tmp_path / "topology.yaml"
    path.write_text(
        """
kafka:
  bootstrap_servers: 127.0.0.1:19092
  partitions: three
forests:
  - name: central
    role: central
    url: ldap://127.0.0.1:13891
    base_dn: dc=central,dc=idsync,dc=test
    bind_dn: cn=admin,dc=central,dc=idsync,dc=test
    passwrd: IDSYNC_CENTRAL_PASSWORD
  - name: forest-a
    role: user
    url: ldap://127.0.0.1:13892
    base_dn: dc=forest-a,dc=idsync,dc=test
    bind_dn: cn=admin,dc=forest-a,dc=idsync,dc=test
    password_env: IDSYNC_FOREST_A_PASSWORD
    contacts_ou: ou=forest-a,dc=forest-a,dc=idsync,dc=test
contacts:
  attributes:
    targetAddress: "SMTP:{mail"
""",
        encoding="utf-8",
    )
    with pytest.raises(TopologyError) as raised:
        load_topology(path)

    assert raised.value.errors == (
        "kafka.partitions: expected an integer, got a string",
        "forests[0].passwrd: unknown key (did you mean password_env?)",
        "forests[0]: set exactly one of password_env or password_file",
        "forests[1].contacts_ou: must be under the central forest's base_dn 'dc=central,dc=idsync,dc=test'",
        "contacts.attributes.targetAddress: unbalanced '{' at position 5; write '{{' for a literal brace",
    )
    assert str(raised.value).splitlines() == [f"{path}: {error}" for error in raised.value.errors]


def test_yaml_syntax_error_gives_line_and_column_without_quoting_the_line(tmp_path):
    path = tmp_path / "topology.yaml"
    path.write_text("kafka:\n  bootstrap_servers: [a:1\nforests: hunter2-secret\n", encoding="utf-8")
    with pytest.raises(TopologyError) as raised:
        load_topology(path)
    (error,) = raised.value.errors
    assert error.startswith("line 3, column 8: invalid YAML: ")
    assert "hunter2" not in str(raised.value)


def test_duplicate_yaml_keys_are_an_error_rather_than_last_one_wins(tmp_path):
    path = tmp_path / "topology.yaml"
    path.write_text("kafka: {}\nforests: []\nkafka: {}\n", encoding="utf-8")
    with pytest.raises(TopologyError, match="line 3, column 1: invalid YAML: duplicate key 'kafka'"):
        load_topology(path)


@pytest.mark.parametrize(("content", "got"), [("", "nothing"), ("- kafka\n", "a list"), ("kafka\n", "a string")])
def test_top_level_must_be_a_mapping(tmp_path, content, got):
    path = tmp_path / "topology.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TopologyError, match=f"expected a mapping of kafka, streams, forests and contacts, got {got}"):
        load_topology(path)


def test_unreadable_file_is_a_topology_error(tmp_path):
    with pytest.raises(TopologyError, match="missing.yaml: cannot read: No such file"):
        load_topology(tmp_path / "missing.yaml")


# --- secrets --------------------------------------------------------------------------------------

def test_secret_from_environment_is_read_at_reveal_time(monkeypatch):
    topology = parse_topology(MINIMAL)
    monkeypatch.setenv("IDSYNC_CENTRAL_PASSWORD", "first\n")
    assert topology.central.password.reveal() == "first"
    monkeypatch.setenv("IDSYNC_CENTRAL_PASSWORD", "rotated")
    assert topology.central.password.reveal() == "rotated"


def test_missing_environment_variable_names_the_variable(monkeypatch):
    monkeypatch.delenv("IDSYNC_CENTRAL_PASSWORD", raising=False)
    with pytest.raises(TopologyError,
                       match=r"^forests\[0\]\.password_env: environment variable IDSYNC_CENTRAL_PASSWORD is not set$"):
        parse_topology(MINIMAL).central.password.reveal()


def test_a_secret_says_what_is_wrong_with_it_and_where_the_topology_names_it(tmp_path, monkeypatch):
    path = tmp_path / "topology.yaml"
    path.write_text(REPO_TOPOLOGY.read_text(encoding="utf-8").replace(
        "password_env: IDSYNC_FOREST_A_PASSWORD", "password_file: secrets/forest-a"), encoding="utf-8")
    monkeypatch.setenv("IDSYNC_CENTRAL_PASSWORD", "s3cret")
    topology = load_topology(path)

    assert topology.central.password.problem() is None
    assert topology.forest("forest-a").password.problem() == (
        f"forests[1].password_file: cannot read password file {tmp_path / 'secrets' / 'forest-a'}: "
        "No such file or directory")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "forest-a").write_text("\n", encoding="utf-8")
    assert topology.forest("forest-a").password.problem().endswith("forest-a is empty")


def test_empty_password_is_refused_because_it_would_bind_anonymously(monkeypatch):
    monkeypatch.setenv("IDSYNC_CENTRAL_PASSWORD", "")
    with pytest.raises(TopologyError, match="environment variable IDSYNC_CENTRAL_PASSWORD is empty"):
        parse_topology(MINIMAL).central.password.reveal()


def test_secret_file_is_relative_to_the_topology_file_and_loses_one_newline(tmp_path, monkeypatch):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "forest-a").write_text("pa ss\n\n", encoding="utf-8")
    path = tmp_path / "topology.yaml"
    path.write_text(REPO_TOPOLOGY.read_text(encoding="utf-8").replace(
        "password_env: IDSYNC_FOREST_A_PASSWORD", "password_file: secrets/forest-a"), encoding="utf-8")
    monkeypatch.chdir("/")

    forest_a = load_topology(path).forest("forest-a")

    assert forest_a.password == Secret(file=tmp_path / "secrets" / "forest-a")
    assert forest_a.password.reveal() == "pa ss\n"


def test_unreadable_secret_file_names_the_file(tmp_path):
    secret = Secret(file=tmp_path / "nope")
    with pytest.raises(TopologyError, match=f"cannot read password file {tmp_path / 'nope'}: No such file"):
        secret.reveal()


def test_secret_needs_exactly_one_source():
    with pytest.raises(ValueError):
        Secret()
    with pytest.raises(ValueError):
        Secret(env="A", file=Path("/b"))


def test_no_repr_or_error_shows_a_password(monkeypatch, tmp_path):
    monkeypatch.setenv("IDSYNC_CENTRAL_PASSWORD", "s3cret-central")
    (tmp_path / "a").write_text("s3cret-file", encoding="utf-8")
    topology = parse_topology(config(**{"forests.1.password_file": str(tmp_path / "a")}))
    assert topology.central.password.reveal() == "s3cret-central"
    assert topology.forest("forest-a").password.reveal() == "s3cret-file"
    for text in (repr(topology), str(topology), repr(topology.central), repr(topology.central.password)):
        assert "s3cret" not in text

    pasted = errors(config(**{"forests.0.password": "s3cret-pasted", "forests.1.password_env": "s3cret pasted"}))
    assert not [e for e in pasted if "s3cret" in e], pasted


def test_object_kinds_default_to_people_groups_and_contacts_and_are_checked():
    topology = load_topology(REPO_TOPOLOGY)
    assert topology.forest("forest-b").object_kinds == {ObjectKind.USER, ObjectKind.GROUP, ObjectKind.CONTACT}
    data = yaml.safe_load(REPO_TOPOLOGY.read_text())
    data["forests"][1]["object_kinds"] = ["user", "printer"]
    with pytest.raises(TopologyError, match=r"forests\[1\]\.object_kinds\[1\]: unknown kind 'printer'"):
        parse_topology(data)


@pytest.mark.parametrize(
    "ldap_filter",
    ["(employeeType=staff)", "(!(userAccountControl:1.2.840.113556.1.4.803:=2))",
     "(&(objectClass=user)(|(department=Sales)(department=HR))(!(cn=svc-*)))", "(cn=Smith \\28Jr\\29)",
     "(:dn:2.4.6.8.10:=Dino)", "(mail;lang-en=*)"],
)
def test_a_forest_filter_is_kept_as_written(ldap_filter):
    assert parse_topology(config(**{"forests.1.filter": ldap_filter})).forest("forest-a").filter == ldap_filter
    assert parse_topology(MINIMAL).forest("forest-a").filter is None


@pytest.mark.parametrize(
    ("ldap_filter", "message"),
    [
        ("employeeType=staff", "must be enclosed in parentheses, e.g. (employeeType=staff)"),
        ("(&(employeeType=staff)(mail=*)", "unbalanced parentheses (3 '(' and 2 ')'"),
        ("(cn=Smith (Jr))", "not a valid LDAP filter (malformed filter)"),
        ("(employeeType=staff)(mail=*)", "not a valid LDAP filter (missing boolean operator in filter)"),
        ("(!(a=b)(c=d))", "not a valid LDAP filter (NOT (!) clause in filter cannot be multiple)"),
        ("(|)", "not a valid LDAP filter"),
        ("(employeeType)", "not a valid LDAP filter"),
        ("(=staff)", "an assertion names no attribute"),
        ("(employee type=staff)", "'employee type' is not an attribute name or OID"),
        ("(cn=a\\zz)", "'\\' must be followed by two hex digits (RFC 4515), at position 5"),
        (7, "expected a string, got an integer"),
    ],
)
def test_a_bad_forest_filter_is_reported_at_its_key(ldap_filter, message):
    reported = errors(config(**{"forests.1.filter": ldap_filter}))
    assert [e for e in reported if e.startswith("forests[1].filter: ") and message in e], reported


def test_writer_accounts_default_to_the_central_forests_bind_dn_and_may_be_listed():
    topology = parse_topology(MINIMAL)
    assert topology.central.change_capture.writer_accounts == ("cn=admin,dc=central,dc=idsync,dc=test",)
    assert topology.forest("forest-a").change_capture.writer_accounts == ()
    listed = ["cn=idsync-writer,ou=services,dc=forest-a,dc=idsync,dc=test", "cn=hr-feed,dc=forest-a,dc=idsync,dc=test"]
    topology = parse_topology(config(**{"forests.1.change_capture": {"writer_accounts": listed},
                                        "forests.0.change_capture": {"writer_accounts": []}}))
    assert topology.forest("forest-a").change_capture.writer_accounts == tuple(listed)
    assert topology.central.change_capture.writer_accounts == ()


@pytest.mark.parametrize(
    ("capture", "path", "message"),
    [
        ({"writer_accounts": "cn=writer,dc=a"}, "writer_accounts", "expected a list of DNs, got a string"),
        ({"writer_accounts": ["cn=writer,,dc=a"]}, "writer_accounts[0]", "not a valid DN"),
        ({"writer_accounts": [7]}, "writer_accounts[0]", "expected a DN, got an integer"),
        ({"mode": "ad-dirsync", "writer_accounts": ["cn=writer,dc=a"]}, "writer_accounts",
         "ad-dirsync cannot tell who made a change; idsync's own entries are recognised by their idsyncAnchor"),
        ({"mode": "ad-usn-poll", "writer_accounts": []}, "writer_accounts", "ad-usn-poll cannot tell who made"),
    ],
)
def test_bad_writer_accounts_are_reported_at_their_key(capture, path, message):
    reported = errors(config(**{"forests.1.change_capture": capture}))
    assert [e for e in reported if e.startswith(f"forests[1].change_capture.{path}: ") and message in e], reported


def test_an_ad_central_forest_has_no_writer_accounts_by_default():
    topology = parse_topology(config(**{"forests.0.change_capture": {"mode": "ad-dirsync"}}))
    assert topology.central.change_capture.writer_accounts == ()


def test_a_placeholder_may_name_fallbacks_the_first_with_a_value_wins():
    template = Template.parse("{sn|cn}")
    assert template.placeholders == ("sn", "cn")
    assert template.render({"cn": "Team"}) == "Team"
    assert template.render({"sn": "Doe", "cn": "Jane"}) == "Doe"
    assert template.render({}) is None
    with pytest.raises(TemplateError):
        Template.parse("{sn|}")
