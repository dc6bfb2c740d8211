"""Sandboxes that run a session's code blocks: the Engine interface and its engines."""
