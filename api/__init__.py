"""The REST API, the SQL schema and queries, and Alertmanager forwarding."""
