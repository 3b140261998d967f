"""Observability: Prometheus metrics (and, later, analytics events and their writers)."""
