"""Data models (pydantic) and the on-disk store."""
