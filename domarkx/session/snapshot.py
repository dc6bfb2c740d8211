"""``SnapshotManager``: import = parse + expand + validate + store (spec section 3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from domarkx import config as project_config
from domarkx.checks.spec import expect_blocks, validate_messages, written_config
from domarkx.data.models import (
    ExecutionConfig,
    SessionSnapshot,
    SnapshotMetadata,
)
from domarkx.data.store import Store, valid_tag
from domarkx.parsing.builtin_macros import import_time
from domarkx.parsing.macros import MacroExpander
from domarkx.parsing.markdown import MarkdownParser, ParsedSession
from domarkx.session.files import check_document, document_root
from domarkx.session.names import display_path, session_name


@dataclass
class ImportResult:
    snapshot: SessionSnapshot
    name: str
    included: list[str]


class SnapshotManager:
    """Turns session documents into stored, content-addressed snapshots."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.parser = MarkdownParser()

    def parse(self, path: Path) -> ParsedSession:
        """Parse ``path``, read only when its real path lies inside its project."""
        display = display_path(Path(path), self.store.root)
        check_document(path, self.store.root, display)
        return self.parser.parse_file(Path(path), display)

    def parse_text(self, text: str, path: Path) -> ParsedSession:
        """A document's text, read as if it were ``path``'s (chat checks text before writing it)."""
        return self.parser.parse_text(
            text, display_path(Path(path), self.store.root), Path(path).resolve()
        )

    def expand(
        self, parsed: ParsedSession, params: Mapping[str, str] | None = None
    ) -> tuple[ParsedSession, list[str]]:
        """Macros expanded, plus the files read on the way (project-relative, sorted).

        ``params`` is only asked for names (it may be a mapping that cannot list them).
        """
        expander = MacroExpander(
            root=self.store.root,
            params=params if params is not None else {},
            confine=document_root(parsed.source_path, self.store.root),
            project=lambda: project_config.load(self.store.root),
        )
        expanded = expander.expand_session(parsed)
        included = sorted(display_path(p, self.store.root) for p in expander.included)
        return expanded, included

    def build(self, expanded: ParsedSession) -> SessionSnapshot:
        """The snapshot of an expanded session, its id computed."""
        return self._snapshot(expanded).with_id()

    def build_with_json(self, expanded: ParsedSession) -> tuple[SessionSnapshot, str]:
        """``build(expanded)`` and the text of its file (``SessionSnapshot.to_json``)."""
        return self._snapshot(expanded).with_id_and_json()

    def _snapshot(self, expanded: ParsedSession) -> SessionSnapshot:
        config = None
        if expanded.execution_config is not None:
            config = ExecutionConfig.model_validate(expanded.execution_config)
        if expect_blocks(expanded.messages):  # a check's mistake is an error here, at its line
            validate_messages(
                expanded.messages,
                expanded.block_lines,
                file=expanded.source_file,
                project=written_config(self.store.root),
            )
        snapshot = SessionSnapshot(
            metadata=SnapshotMetadata(
                source_file=expanded.source_file,
                import_timestamp=import_time().isoformat(timespec="seconds"),
                user_metadata=expanded.front_matter,
            ),
            execution_config=config,
            config_format="json" if expanded.config_format == "json" else "yaml",
            setup_script=expanded.setup_script,
            setup_output=expanded.setup_output,
            preamble=expanded.preamble,
            conversation=expanded.messages,
        )
        return snapshot

    def import_file(
        self,
        path: Path,
        params: dict[str, str] | None = None,
        tags: list[str] | None = None,
    ) -> ImportResult:
        """Parse, expand and store ``path``; tag it with its session name by default."""
        expanded, included = self.expand(self.parse(path), params)
        snapshot = self.build(expanded)
        name = session_name(Path(path), self.store.root)
        wanted = tags if tags else [name] if valid_tag(name) else []
        for tag in wanted:  # a bad tag is an error before anything is written
            if not valid_tag(tag):
                self.store.tag(tag, "")
        self.store.put_snapshot(snapshot)
        for tag in wanted:
            self.store.tag(tag, snapshot.snapshot_id)
        return ImportResult(snapshot, name, included)
