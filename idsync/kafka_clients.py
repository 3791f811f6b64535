"""The keyword arguments of every aiokafka client the operator commands (lag, errors) open."""

from __future__ import annotations

from typing import Any

from streams.config.topology import KafkaSettings


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Bootstrap servers and client id: what streams/kafka/lag.py gives its clients. The one place
    where these commands' Kafka connections are configured."""
    return {"bootstrap_servers": kafka.bootstrap_servers, "client_id": kafka.client_id}
