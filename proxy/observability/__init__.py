"""Metrics (Prometheus) and logs (structlog)."""
