"""Monitoring: Prometheus metrics, outage tracking and retry backoff."""
