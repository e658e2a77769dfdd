"""Benchmarks that anyone can rerun: ``dowguard bench``."""
