"""One module per supported source format; :mod:`ingest.parse` picks one."""
