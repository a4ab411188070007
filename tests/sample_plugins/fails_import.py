"""Raises while being imported."""

raise RuntimeError("cannot import: vendor SDK missing")
