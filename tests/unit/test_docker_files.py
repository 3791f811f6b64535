"""docker/: the compose deployment and the images, checked without a container engine.

compose.yaml is read as data and held against what idsync itself reads: the topology it mounts
(loaded by idsync's own loader), the metric names streams/monitoring/metrics.py registers, and the
pip step of docker/bootstrap.sh.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import prometheus_client.metrics
import pytest
import yaml
from packaging.specifiers import SpecifierSet

import streams.monitoring.metrics as idsync_metrics
from streams.config.topology import Topology, load_topology

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
SERVICES = ("kafka", "openldap", "postgres", "idsync", "prometheus", "grafana")
SECRETS_DIR = PurePosixPath("/run/secrets")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where empty files stand in for the secrets a topology names as TLS files (see `topology`)."""
    return tmp_path_factory.mktemp("run-secrets")


@pytest.fixture(scope="module")
def topology(compose, stand_in: Path) -> Topology:
    """The mounted topology as idsync loads it. Its TLS files (a CA certificate) are Docker secrets
    that exist only in the containers, and the loader checks that each is a file: an empty file of
    the same name in `stand_in` stands in for each."""
    source = _topology_source(compose)
    text = source.read_text()
    for path in _tls_secret_files(text):
        (stand_in / path.name).touch()
        text = text.replace(f"_file: {path}", f"_file: {stand_in / path.name}")
    copy = stand_in / source.name
    copy.write_text(text)
    return load_topology(copy)


def _topology_source(compose: dict) -> Path:
    return _host_path(_mount_source(compose["services"]["idsync"], "/etc/idsync/topology.yaml"))


def _tls_secret_files(text: str) -> list[PurePosixPath]:
    """The TLS files (ca_file, cert_file, key_file) a topology names under /run/secrets/."""
    return [PurePosixPath(m) for m in re.findall(r"(?m)^\s*(?:ca|cert|key)_file:\s*(/run/secrets/\S+)\s*$", text)]


def _host_path(source: str) -> Path:
    """A bind mount's source, relative to compose.yaml's directory."""
    return (DOCKER / source).resolve()


def _mount_source(service: dict, target: str) -> str:
    for volume in service.get("volumes", []):
        source, mounted, *_ = volume.split(":") if isinstance(volume, str) else (volume["source"], volume["target"])
        if mounted == target:
            return source
    raise AssertionError(f"nothing is mounted at {target}")


def _secret_targets(service: dict) -> dict[PurePosixPath, str]:
    """Where each of the service's secrets appears in the container -> the secret's name."""
    targets = {}
    for entry in service.get("secrets", []):
        name, target = (entry, entry) if isinstance(entry, str) else (entry["source"], entry.get("target", entry["source"]))
        targets[SECRETS_DIR / target] = name
    return targets


def _topology_secret_files(topology: Topology) -> list[Path]:
    files = [forest.password.file for forest in topology.forests]
    if topology.metrics is not None and topology.metrics.auth is not None:
        files.append(topology.metrics.auth.secret.file)
    if topology.sites is not None:
        files += [store.password.file for store in topology.sites.stores if store.password is not None]
    return files


def test_every_service_is_there(compose):
    assert set(SERVICES) <= set(compose["services"])


def test_idsync_runs_with_the_compose_topology(compose, topology):
    idsync = compose["services"]["idsync"]
    assert _host_path(_mount_source(idsync, "/etc/idsync/topology.yaml")) == DOCKER / "topology.compose.yaml"
    assert idsync["command"] == ["run", "--topology", "/etc/idsync/topology.yaml"]
    assert idsync["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert topology.central.name == "central" and topology.user_forests


def test_every_password_file_is_a_compose_secret_mounted_at_that_path(compose, topology):
    idsync = _secret_targets(compose["services"]["idsync"])
    declared = compose["secrets"]
    files = _topology_secret_files(topology)
    assert len(files) == len(topology.forests) + 2  # the forests', the metrics', the site store's
    for file in files:
        path = PurePosixPath(file)
        assert path in idsync, f"{path} is not a secret of the idsync service"
        secret = declared[idsync[path]]
        assert _host_path(secret["file"]).parent == DOCKER / "secrets"
    # No password reaches idsync another way.
    assert not any(forest.password.env for forest in topology.forests)
    assert "environment" not in compose["services"]["idsync"]


def test_the_site_store_verifies_postgres_with_a_ca_that_is_a_compose_secret(compose, topology, stand_in):
    [store] = topology.sites.stores
    assert urlsplit(store.location).hostname == "postgres" and "postgres" in compose["services"]
    assert store.tls.required and store.tls.verify  # verify-full: never verify: false
    assert store.tls.files.ca_file == stand_in / "postgres-ca"
    [ca_file] = _tls_secret_files(_topology_source(compose).read_text())
    idsync = _secret_targets(compose["services"]["idsync"])
    assert ca_file in idsync, f"{ca_file} is not a secret of the idsync service"
    assert _host_path(compose["secrets"][idsync[ca_file]]["file"]).parent == DOCKER / "secrets"
    # The server side: TLS on, with a certificate and key that are its own secrets.
    postgres = compose["services"]["postgres"]
    command = " ".join(postgres["command"])
    assert "ssl=on" in command
    cert = re.search(r"ssl_cert_file=(\S+)", command).group(1)
    assert PurePosixPath(cert) in _secret_targets(postgres)
    assert "/run/secrets/postgres-tls-key" in " ".join(postgres["entrypoint"])
    assert {"postgres-tls-cert", "postgres-tls-key"} <= set(_secret_targets(postgres).values())


def test_each_forest_is_a_slapd_service_with_the_same_secret(compose, topology):
    for forest in topology.forests:
        url = urlsplit(forest.url)
        service = compose["services"][url.hostname]
        assert url.port == 389
        assert service["build"]["dockerfile"] == "docker/slapd/Dockerfile"
        assert service["environment"]["LDAP_SUFFIX"] == forest.base_dn
        admin_password = PurePosixPath(service["environment"]["LDAP_ADMIN_PASSWORD_FILE"])
        assert admin_password == PurePosixPath(forest.password.file)
        assert forest.bind_dn == f"cn=admin,{forest.base_dn}"
        assert _secret_targets(service)[admin_password] == _secret_targets(compose["services"]["idsync"])[admin_password]


def test_kafka_advertises_the_topologys_bootstrap_servers(compose, topology):
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    advertised = {urlsplit(listener).netloc for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert advertised == set(topology.kafka.bootstrap_servers.split(","))
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert topology.kafka.security.protocol == "PLAINTEXT"
    assert topology.kafka.replication_factor == 1 == env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]
    # The official image, at the Kafka version the bootstrap fetches for the tests.
    version = re.search(r"^KAFKA_VERSION=(\S+)$", (DOCKER / "bootstrap.sh").read_text(), re.M).group(1)
    assert kafka["image"] == f"apache/kafka:{version}"


def test_prometheus_scrapes_idsync_where_it_listens(compose, topology):
    metrics = topology.metrics
    assert metrics is not None and metrics.host == "0.0.0.0"
    prometheus = compose["services"]["prometheus"]
    config = yaml.safe_load(_host_path(_mount_source(prometheus, "/etc/prometheus/prometheus.yml")).read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "idsync"]
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    assert targets == [f"idsync:{metrics.port}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # The worker asks for basic auth: Prometheus sends it, with the password from the same secret.
    assert job["basic_auth"]["username"] == metrics.auth.username
    password_file = PurePosixPath(job["basic_auth"]["password_file"])
    assert password_file == PurePosixPath(metrics.auth.secret.file)
    assert _secret_targets(prometheus)[password_file] == _secret_targets(compose["services"]["idsync"])[password_file]


def _registered_metric_names() -> set[str]:
    """The series names idsync's metrics module exposes (a counter's with its _total suffix, a histogram's
    _bucket, _sum and _count)."""
    names = set()
    for value in vars(idsync_metrics).values():
        if isinstance(value, prometheus_client.metrics.MetricWrapperBase):
            for family in value.describe():
                if family.type == "counter":
                    names.update({f"{family.name}_total", f"{family.name}_created"})
                elif family.type == "histogram":
                    names.update({f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"})
                else:
                    names.add(family.name)
    return names


_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                    "offset"}


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords,
    label matchers, grouping labels or range durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return {name for name in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*(?!\s*\()(?![A-Za-z0-9_:])", expr)
            if name not in _PROMQL_KEYWORDS}


def test_metric_names_are_read_from_expressions():
    assert _metric_names('sum by (forest) (rate(idsync_x_total{forest="a"}[$__rate_interval]))') == {"idsync_x_total"}
    assert _metric_names("time() - idsync_saved_seconds") == {"idsync_saved_seconds"}


def test_grafana_dashboard_queries_only_idsyncs_metrics(compose):
    grafana = compose["services"]["grafana"]
    dashboard_path = "/var/lib/grafana/dashboards/idsync/idsync-dashboard.json"
    assert _host_path(_mount_source(grafana, dashboard_path)) == DOCKER / "grafana" / "idsync-dashboard.json"
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/idsync.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == str(PurePosixPath(dashboard_path).parent)
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (source,) = datasource["datasources"]
    assert urlsplit(source["url"]).hostname == "prometheus"

    dashboard = json.loads((DOCKER / "grafana" / "idsync-dashboard.json").read_text())
    targets = [target for panel in dashboard["panels"] for target in panel["targets"]]
    assert {target["datasource"]["uid"] for target in targets} == {source["uid"]}
    queried = set().union(*(_metric_names(target["expr"]) for target in targets))
    registered = _registered_metric_names()
    assert queried <= registered, f"not metrics of idsync: {sorted(queried - registered)}"
    # Every metric of the README's table is on the dashboard.
    assert {name.removesuffix("_created") for name in registered if not name.endswith("_created")} <= queried


def _pip_install(words: list[str]) -> dict:
    """The parts of a `pip install` command line that decide what gets installed."""
    words = words[words.index("install") + 1:]
    options, constraints, targets, editable = set(), [], [], False
    while words:
        word = words.pop(0)
        if word == "-c":
            constraints.append(words.pop(0))
        elif word == "-e":
            editable = True
        elif word.startswith("-"):
            options.add(word)
        else:
            targets.append(word)
    (target,) = targets
    project, _, extras = target.partition("[")
    return {"options": options, "constraints": constraints, "project": project, "editable": editable,
            "extras": set(filter(None, extras.rstrip("]").split(",")))}


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of docker/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_installs_like_the_bootstrap():
    bootstrap_line = next(line for line in (DOCKER / "bootstrap.sh").read_text().splitlines()
                          if re.search(r"/bin/pip\"? install ", line))
    bootstrap = _pip_install(shlex.split(bootstrap_line.replace("||", "")))
    runs = [arguments for instruction, arguments in _dockerfile() if instruction == "RUN" and "pip install" in arguments]
    (run,) = runs
    image = _pip_install(shlex.split(run.split("&&")[0]))

    # The same pins and options; the image installs the project itself, not editable and without
    # the test extra (the bootstrap's venv runs the tests, the image runs idsync).
    assert image["constraints"] == bootstrap["constraints"] == ["docker/constraints.txt"]
    assert image["options"] == bootstrap["options"]
    assert image["project"] == bootstrap["project"] == "."
    assert not image["editable"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert bootstrap["extras"] <= set(pyproject["project"]["optional-dependencies"])
    assert image["extras"] == bootstrap["extras"] - {"test"}
    copied = [arguments.split() for instruction, arguments in _dockerfile() if instruction == "COPY"]
    assert ["docker/constraints.txt", "docker/constraints.txt"] in copied


def test_dockerfile_python_satisfies_requires_python():
    (base,) = [arguments for instruction, arguments in _dockerfile() if instruction == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "python" and (tag.endswith("-slim") or "-slim-" in tag)
    version = re.match(r"\d+\.\d+", tag).group(0)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert version == "3.11" and SpecifierSet(requires).contains(version)


def test_dockerfile_runs_idsync_unprivileged_with_no_secret_inside(compose):
    instructions = _dockerfile()
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert json.loads(dict(instructions)["ENTRYPOINT"]) == ["idsync"]
    cmd = json.loads(dict(instructions)["CMD"])
    assert cmd == ["run", "--topology", "/etc/idsync/topology.yaml"] == compose["services"]["idsync"]["command"]
    for instruction, arguments in instructions:
        if instruction in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|_KEY\b", arguments, re.I), arguments
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "docker/secrets" in ignored and ".venv" in ignored
