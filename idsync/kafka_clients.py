"""The keyword arguments of every aiokafka client the operator commands (lag, errors) open."""

from __future__ import annotations

from typing import Any

from streams.config.topology import KafkaSettings
from streams.kafka.clients import client_settings


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Bootstrap servers, client id and the security settings (TLS, SASL): what every idsync client
    gets (streams/kafka/clients.py). The one place where these commands' Kafka connections are
    configured."""
    return client_settings(kafka)
