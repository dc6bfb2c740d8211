"""domarkx: keep LLM sessions as plain Markdown and build them like code.

Nothing is imported here on purpose: the command line must start fast, so
heavy modules (markdown-it, docker, jinja2, openai) load only where used.
"""

__version__ = "0.1.0"
