"""An outage is logged once when it starts and once when it ends, and counted once."""

import logging
import secrets

from prometheus_client import REGISTRY, Counter, Gauge

from streams.contracts import RetriableError
from streams.monitoring.backoff import Backoff
from streams.monitoring.outages import Outage

UP = Gauge("test_outage_up", "up gauge of the tests", ["case"])
OUTAGES = Counter("test_outage_outages", "outage counter of the tests", ["case"])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def outage(clock: Clock) -> tuple[Outage, str]:
    case = secrets.token_hex(4)
    tracked = Outage(
        f"component=test case={case}", up=UP.labels(case), outages=OUTAGES.labels(case), backoff=Backoff(), clock=clock
    )
    return tracked, case


def sample(name: str, case: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"case": case})


def test_outage_logs_start_and_end_once_each_with_its_duration(caplog):
    caplog.set_level(logging.DEBUG, logger="streams.monitoring.outages")
    clock = Clock()
    tracked, case = outage(clock)
    assert sample("test_outage_up", case) == 1 and sample("test_outage_outages_total", case) == 0

    for _ in range(5):
        tracked.failed(RetriableError("forest a: LDAPSocketOpenError: connection refused"))
        clock.now += 2.5
    assert tracked.ongoing
    assert sample("test_outage_up", case) == 0 and sample("test_outage_outages_total", case) == 1
    tracked.succeeded()
    tracked.succeeded()

    started, ended = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert started.startswith(
        f"outage started component=test case={case} "
        "error='RetriableError: forest a: LDAPSocketOpenError: connection refused' retry_in=0."
    )
    assert ended == f"outage ended component=test case={case} duration=12.5s failures=5"
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 4
    assert not tracked.ongoing
    assert sample("test_outage_up", case) == 1 and sample("test_outage_outages_total", case) == 1


def test_each_outage_is_counted_and_backs_off_afresh():
    clock = Clock()
    tracked, case = outage(clock)
    delays = [tracked.failed(OSError("refused")) for _ in range(3)]
    assert delays[0] < delays[1] < delays[2]
    tracked.succeeded()
    assert tracked.failed(OSError("refused")) < delays[1]
    assert sample("test_outage_outages_total", case) == 2


def test_success_without_an_outage_logs_nothing(caplog):
    caplog.set_level(logging.DEBUG, logger="streams.monitoring.outages")
    tracked, case = outage(Clock())
    tracked.succeeded()
    assert caplog.records == [] and sample("test_outage_up", case) == 1


def test_outages_sharing_a_gauge_keep_it_at_0_until_the_last_ends():
    case = secrets.token_hex(4)
    directory, kafka = (Outage(f"component=test case={case} of={what}", up=UP.labels(case),
                               outages=OUTAGES.labels(case), clock=Clock()) for what in ("directory", "kafka"))
    directory.failed(RetriableError("directory down"))
    kafka.failed(RetriableError("kafka down"))
    directory.succeeded()
    assert sample("test_outage_up", case) == 0
    kafka.succeeded()
    assert sample("test_outage_up", case) == 1 and sample("test_outage_outages_total", case) == 2
