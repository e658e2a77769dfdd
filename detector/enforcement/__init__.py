"""Enforcement: hooks that throttle and release functions, and their policy."""
