"""Kafka's own command-line tools, run from the jars docker/bootstrap.sh caches (kafka-tools is among
them): what `kafka-consumer-groups.sh --describe` would print, for comparing idsync's figures."""

from __future__ import annotations

import subprocess
from pathlib import Path

from idsync.rig.errors import RigError
from idsync.rig.kafka import DEFAULT_VERSION, _java, kafka_libs

CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def describe_group(bootstrap_servers: str, group: str, *, command_config: Path | None = None,
                   version: str = DEFAULT_VERSION, timeout: float = 60) -> list[dict[str, str]]:
    """`kafka-consumer-groups --describe --group G`: one row per partition, keyed by the tool's
    column names (TOPIC, PARTITION, CURRENT-OFFSET, LOG-END-OFFSET, LAG, ...), values as printed
    ("-" where it has none). `command_config`: a client properties file (security settings)."""
    # No log4j configuration: its warnings go to stderr, the table to stdout.
    command = [_java(), "-Xmx128m", "-XX:+UseSerialGC", "-cp", f"{kafka_libs(version)}/*", CONSUMER_GROUP_COMMAND,
               "--bootstrap-server", bootstrap_servers, "--describe", "--group", group]
    if command_config is not None:
        command += ["--command-config", str(command_config)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RigError(f"ConsumerGroupCommand --describe --group {group} failed ({result.returncode}): "
                       f"{result.stdout}{result.stderr}")
    return parse_describe(result.stdout)


def parse_describe(output: str) -> list[dict[str, str]]:
    """The rows of the tool's table (it prints a blank line, then a header, then a row a partition)."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in output.splitlines():
        cells = line.split()
        if not cells:
            continue
        if cells[0] == "GROUP":
            header = cells
        elif header is not None and len(cells) == len(header):
            rows.append(dict(zip(header, cells)))
    return rows
