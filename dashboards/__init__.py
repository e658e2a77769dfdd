"""Grafana dashboards as JSON, and their provisioning."""
