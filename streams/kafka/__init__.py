"""Kafka plumbing: topics, the change publisher, reader positions, offset commits, range reads,
consumer lag and dead letters."""
