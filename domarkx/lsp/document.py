"""A document as the editor holds it, and the errors ``domarkx import`` reports for its text.

``problems`` goes the way of an import (``SnapshotManager``: parse, expand the
macros, validate the session-config) on the editor's text, unsaved edits
included, and adds the checks a run makes before it starts anything: the
engine exists, and the project's configuration grants what the session-config
asks for (a Docker network, a model endpoint and its key). Nothing is stored,
no code runs and no model is asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from domarkx import config as project_config
from domarkx.data.layout import Layout
from domarkx.data.models import SessionSnapshot
from domarkx.data.store import Store
from domarkx.errors import DomarkxError
from domarkx.execution.engine import engine_class
from domarkx.llm.endpoints import resolve, turns_refusal
from domarkx.parsing.markdown import ParsedSession
from domarkx.session.legacy import config_key_line
from domarkx.session.names import display_path
from domarkx.session.snapshot import SnapshotManager

# An error inside an included file names the chain of includes that led there;
# its first link is the macro in the document itself.
_CHAIN = re.compile(r"\(include chain: (?P<chain>.*)\)")


@dataclass(frozen=True)
class Problem:
    """One diagnostic: a 1-based line of the document and the CLI's message."""

    line: int
    message: str
    hint: str | None = None
    # The file the CLI names when it is not the document (an included file, domarkx.toml).
    elsewhere: str | None = None
    elsewhere_line: int | None = None


@dataclass
class Document:
    """One document: its path as the editor names it, its text, its project's store."""

    path: Path
    text: str
    store: Store = field(repr=False)

    @property
    def root(self) -> Path:
        return self.store.root

    @cached_property
    def display(self) -> str:
        """The path the CLI prints for it (relative to the project root)."""
        return display_path(self.path, self.root)

    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @property
    def is_session(self) -> bool:
        """Whether the build builds it: ``sessions/**/*.md``, no partial, no hidden file."""
        return Layout.at(str(self.root)).session_of(str(self.path)) is not None

    def parse(self) -> ParsedSession:
        """The document's structure (macros as written); a ``DomarkxError`` when broken."""
        return SnapshotManager(self.store).parse_text(self.text, self.path)


def open_document(path: Path, text: str) -> Document:
    """``text`` (the editor's, line endings as the CLI reads them) of the file at ``path``."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return Document(Path(path).absolute(), text, Store.discover(Path(path).absolute().parent))


def problems(doc: Document, params: dict[str, str] | None = None) -> list[Problem]:
    """The errors ``domarkx import`` (and the start of ``domarkx run``) would report."""
    manager = SnapshotManager(doc.store)
    try:
        expanded, _ = manager.expand(manager.parse_text(doc.text, doc.path), params or {})
        snapshot = manager.build(expanded)
    except DomarkxError as err:
        return [locate(doc, err)]
    return [locate(doc, err) for err in refusals(doc, snapshot)]


def refusals(doc: Document, snapshot: SessionSnapshot) -> list[DomarkxError]:
    """What a run would refuse before starting: an unknown engine, a setting not granted."""
    found: list[DomarkxError] = []
    config = snapshot.config()
    try:
        project = project_config.load(doc.root)
    except DomarkxError as err:
        return [err]

    def line_of(key: str) -> int | None:
        return config_key_line(doc.text, key)

    try:
        engine = engine_class(config.engine)
    except DomarkxError as err:
        if err.file is None:  # the document's `engine:` (a broken plugin names itself)
            err.file, err.line = doc.display, line_of("engine")
        found.append(err)
    else:
        refused = engine.refusal(config, project)
        if refused is not None:
            found.append(
                DomarkxError(
                    refused.message, file=doc.display, line=line_of(refused.key), hint=refused.hint
                )
            )
    if config.model is not None:
        access = resolve(config.model, project, session=doc.display, locate=line_of)
        if access.refusal is not None:
            found.append(access.refusal)
        too_many = turns_refusal(config.model, project, session=doc.display, locate=line_of)
        if too_many is not None:
            found.append(too_many)
    return found


def locate(doc: Document, err: DomarkxError) -> Problem:
    """``err`` at the line of the document it concerns.

    An error in the document itself is at its line; one inside an included file
    at the include macro that led there; one in domarkx.toml at the session-config
    (or the first line).
    """
    if err.file is None or err.file == doc.display:
        return Problem(err.line or 1, err.message, err.hint)
    match = _CHAIN.search(err.message)
    line = None
    if match is not None:
        for link in match.group("chain").split(" -> "):
            name, _, number = link.rpartition(":")
            if name == doc.display and number.isdigit():
                line = int(number)
                break
    if line is None:
        line = config_key_line(doc.text, err.key) if err.key else None
    if line is None:
        line = _config_fence_line(doc) or 1
    return Problem(line, err.message, err.hint, elsewhere=err.file, elsewhere_line=err.line)


def _config_fence_line(doc: Document) -> int | None:
    try:
        return doc.parse().config_line
    except DomarkxError:
        return None
