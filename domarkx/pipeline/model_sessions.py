"""Which sessions may ask a model: a build waits for models together only when one may.

doit's thread runner lets the sessions that wait for a model wait together
(``overlap.py``), but every task it runs crosses between threads: a cold
build of 1,000 sessions that asks no model takes ~35% longer with it than
with doit's serial runner. So when a build has many sessions to parse
(``workers.MIN_SESSIONS``), ``tasks.doit_config`` keeps the thread runner
only if a session may ask a model, which is known without parsing:

- the ``parse`` stage leaves an empty file ``cache/model/<name>.asks`` for each
  session whose ``session-config`` names a model (``note``);
- a session whose parse cache is missing or older than its document (a new
  project, an edit) is read: its ``session-config`` block, found as the
  parser finds it but with only the part before the first role heading read,
  is looked at (``text_may_ask``), and a ``model`` key anywhere in it counts
  as asking.

A wrong "no" would only make model calls wait one after the other; the look
errs towards "yes". ``DOMARKX_LLM_CONCURRENCY``, when set, chooses.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from typing import Any

from domarkx.data.layout import Layout

# ``model:`` (YAML) or ``"model":`` (JSON): a key, when what comes before it allows
# (``_names_model``). Led by a literal, the search skips through a text quickly.
_MODEL_KEY = re.compile(r"""model["']?\s*:""")

# The marks' folders this process made (one ``mkdir`` per build, not per session).
_made: set[str] = set()


def note(layout: Layout, name: str, config: dict[str, Any] | None) -> None:
    """After parsing ``name``: mark it when its session-config names a model."""
    path = layout.abs(layout.model_marker(name))
    if config is not None and config.get("model") is not None:
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w"):
                pass
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        folder = layout.abs(f"{layout.home}/cache/model")
        if folder not in _made:  # its being there says the marks are kept (``may_ask``)
            os.makedirs(folder, exist_ok=True)
            _made.add(folder)


def may_ask(layout: Layout, names: Iterable[str], stale: Iterable[str]) -> bool:
    """Whether any of ``names`` may ask a model (``stale``: those parsed before their last edit)."""
    names = set(names)
    stale = set(stale)
    marked = layout.marked_model_sessions()
    if marked is None:
        # Never marked: parsed by an older domarkx (it may ask), or never parsed.
        if names - stale:
            return True
    elif any(name in names and name not in stale for name in marked):
        return True
    return any(_source_may_ask(layout, name) for name in sorted(stale))


def _source_may_ask(layout: Layout, name: str) -> bool:
    try:
        with open(layout.abs(layout.source(name)), encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return False  # its parse task reports it
    return text_may_ask(text)


def text_may_ask(text: str) -> bool:
    """Whether a document's session-config may name a model.

    The session-config is found as the parser finds it (``config_sources``);
    its YAML or JSON is not read: a ``model`` key anywhere in it counts.
    """
    # A model key in the config is a model key in the text: most documents are ruled
    # out by this search alone, without reading their blocks.
    if "session-config" not in text or not _names_model(text):
        return False
    # The parser and the pydantic models (~150 ms): loaded only for a document that
    # may name a model, never by a no-op build or an edit, which load this module.
    from domarkx.parsing.markdown import config_sources

    return any(_names_model(code) for code in config_sources(text))


def _names_model(text: str) -> bool:
    """Whether ``text`` holds ``model:`` or ``"model":`` at its start or after a space,
    ``{`` or ``,`` (a key in YAML or JSON, wherever it is nested)."""
    for match in _MODEL_KEY.finditer(text):
        start = match.start()
        if start and text[start - 1] in "\"'":
            start -= 1
        if start == 0 or text[start - 1].isspace() or text[start - 1] in "{,":
            return True
    return False
