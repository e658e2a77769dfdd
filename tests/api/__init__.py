"""Tests of the storage layer, the REST API and Alertmanager forwarding."""
