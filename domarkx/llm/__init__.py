"""LLM providers, the record/replay cache and the assistant's code loop."""
