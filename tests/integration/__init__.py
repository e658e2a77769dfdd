"""Tests against real servers: Kafka and PostgreSQL, started by tests/conftest.py."""
