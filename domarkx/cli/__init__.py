"""The ``domarkx`` command: one module per verb (``cmd_*.py``), wired in ``main``."""
