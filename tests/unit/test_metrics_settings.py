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
