"""Migration scripts, one per schema revision (a package so it is installed)."""
