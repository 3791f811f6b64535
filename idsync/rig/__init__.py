"""Real servers for idsync's tests and demos: a Kafka broker and OpenLDAP forests, as local processes."""

from idsync.rig.errors import RigError
from idsync.rig.kafka import KafkaBroker, kafka_libs
from idsync.rig.slapd import SlapdInstance

__all__ = ["KafkaBroker", "RigError", "SlapdInstance", "kafka_libs"]
