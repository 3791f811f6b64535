"""aiokafka's connection errors are cut to one line of each kind a minute."""

import logging

from streams.monitoring.client_logs import OncePerWindow


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str, level: int = logging.ERROR, name: str = "aiokafka.client") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, ("x",), None)


def test_one_line_of_each_kind_per_window_then_one_saying_how_many_were_left_out():
    clock = Clock()
    once = OncePerWindow(window=60, clock=clock)
    assert once.filter(record("Unable connect to node with id %s"))
    assert not any(once.filter(record("Unable connect to node with id %s")) for _ in range(200))
    assert once.filter(record("Failed fetch messages from %s", name="aiokafka.consumer.fetcher"))
    assert once.filter(record("Unable connect to node with id %s", level=logging.DEBUG))
    clock.now = 61
    later = record("Unable connect to node with id %s")
    assert once.filter(later)
    assert later.getMessage() == "Unable connect to node with id x (200 like it left out in the last 60s)"
    assert not once.filter(record("Unable connect to node with id %s"))
