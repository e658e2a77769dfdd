"""Per-context detection on event time, alert lifecycle, enforcement, the daemon."""
