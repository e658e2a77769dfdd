"""Parsing of every supported source into normalised events, Kafka I/O, replay."""
