"""topology.yaml keys of the metrics endpoint and of AD's change-notification wake-up."""

import pytest

from streams.config.topology import MetricsSettings, parse_topology
from tests.unit.test_topology import config, errors


def test_no_metrics_section_means_no_endpoint():
    assert parse_topology(config()).metrics is None


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("127.0.0.1:9464", "127.0.0.1", 9464), ("0.0.0.0:80", "0.0.0.0", 80), ("[::1]:9464", "::1", 9464)],
)
def test_metrics_listen_is_host_and_port(listen, host, port):
    assert parse_topology(config(**{"metrics.listen": listen})).metrics == MetricsSettings(host=host, port=port)


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "host :9464", ""])
def test_metrics_listen_must_be_host_and_port(listen):
    assert errors(config(**{"metrics.listen": listen})) == [
        f"metrics.listen: expected host:port (e.g. 127.0.0.1:9464), got {listen!r}"
    ]


def test_metrics_listen_only_on_this_machine_unless_configured():
    assert parse_topology(config(metrics={})).metrics == MetricsSettings(host="127.0.0.1", port=9464)


def test_metrics_section_takes_listen_and_auth_only():
    assert errors(config(metrics={"port": 9464})) == ["metrics.port: unknown key"]
    assert errors(config(metrics="127.0.0.1:9464")) == ["metrics: expected a mapping, got a string"]


def test_wake_on_change_notification_is_off_by_default_and_allowed_for_dirsync():
    assert parse_topology(config()).forest("forest-a").change_capture.wake_on_change_notification is False
    topology = parse_topology(
        config(**{"forests.1.change_capture": {"mode": "ad-dirsync", "wake_on_change_notification": True}})
    )
    assert topology.forest("forest-a").change_capture.wake_on_change_notification is True


@pytest.mark.parametrize("mode", ["accesslog-sync", "ad-usn-poll", "generic-poll"])
def test_wake_on_change_notification_is_refused_for_other_modes(mode):
    assert errors(config(**{"forests.1.change_capture": {"mode": mode, "wake_on_change_notification": True}})) == [
        "forests[1].change_capture.wake_on_change_notification: only for mode ad-dirsync "
        f"(AD's change notification control), not {mode}"
    ]


def test_wake_on_change_notification_must_be_a_boolean():
    capture = {"mode": "ad-dirsync", "wake_on_change_notification": "yes"}
    assert errors(config(**{"forests.1.change_capture": capture})) == [
        "forests[1].change_capture.wake_on_change_notification: expected true or false, got a string"
    ]


def run_with(tmp_path, monkeypatch, *flags: str):
    """`idsync run` on the repository's topology (its metrics section commented out) with `flags`:
    the topology the worker would have been started with."""
    from idsync import cli
    from tests.unit.test_topology import REPO_TOPOLOGY

    path = tmp_path / "topology.yaml"
    path.write_text(REPO_TOPOLOGY.read_text(encoding="utf-8"), encoding="utf-8")
    started = []
    monkeypatch.setattr("idsync.runtime.run_worker", lambda topology, **_: started.append(topology))
    assert cli.main(["run", "--topology", str(path), *flags]) == 0
    [topology] = started
    return topology


def test_a_worker_serves_its_metrics_where_run_says_so_several_workers_on_one_machine_apart(tmp_path, monkeypatch):
    assert run_with(tmp_path, monkeypatch).metrics is None
    assert run_with(tmp_path, monkeypatch, "--metrics-listen", "127.0.0.1:9470").metrics == MetricsSettings(
        host="127.0.0.1", port=9470)


def test_run_refuses_a_metrics_listen_that_is_not_host_and_port(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_with(tmp_path, monkeypatch, "--metrics-listen", "9470")
    assert "expected host:port" in capsys.readouterr().err
