"""The language server over stdio (pygls): documents in, diagnostics, lenses, hovers out.

Diagnostics are computed in a worker thread a moment after the last edit
(``DEBOUNCE``) and dropped when the document changed meanwhile. Code lens
commands run in pygls's thread pool, so that the server keeps answering (and
can put approval questions to the user) while a model answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path
from pygls.workspace import TextDocument
from pygls.workspace.position_codec import ServerTextPosition, ServerTextRange

from domarkx import __version__
from domarkx.errors import DomarkxError, UsageError
from domarkx.lsp import actions, features
from domarkx.lsp.document import Document, Problem, open_document, problems
from domarkx.session.approval import Answer, CodeRequest

# Seconds after the last keystroke before a document is checked.
DEBOUNCE = 0.3

_KINDS = {
    "role": lsp.CompletionItemKind.Keyword,
    "key": lsp.CompletionItemKind.Property,
    "value": lsp.CompletionItemKind.Value,
    "file": lsp.CompletionItemKind.File,
    "folder": lsp.CompletionItemKind.Folder,
}
# The answers of an approval question, as the command line's yes / no / always.
_RUN, _ALWAYS, _SKIP = "Run it", "Run all", "Don't run"


class DomarkxServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("domarkx", __version__)
        self.checks: dict[str, asyncio.Task[None]] = {}

    # The editor as the commands' terminal (actions.Editor) ----------------------------
    def log(self, text: str) -> None:
        self.window_log_message(lsp.LogMessageParams(type=lsp.MessageType.Log, message=text))

    def ask(self, request: CodeRequest) -> Answer:
        """window/showMessageRequest; a dismissed question is a no."""
        question = (
            f"{request.session}: {request.where}: the model wants to run this "
            f"{request.language} code on this machine ({request.engine} engine):\n{request.code}"
        )
        self.log(question)
        params = lsp.ShowMessageRequestParams(
            type=lsp.MessageType.Warning,
            message=question,
            actions=[lsp.MessageActionItem(title=t) for t in (_RUN, _SKIP, _ALWAYS)],
        )
        item = self.window_show_message_request(params).result()
        title = item.title if item is not None else None
        self.log(f"answer: {title or 'none (not run)'}")
        return "yes" if title == _RUN else "always" if title == _ALWAYS else "no"

    # Documents ------------------------------------------------------------------------
    def document(self, uri: str) -> tuple[TextDocument, Document] | None:
        path = to_fs_path(uri)
        if path is None or not uri.startswith("file:"):
            return None
        text_document = self.workspace.get_text_document(uri)
        return text_document, open_document(Path(path), text_document.source)

    def document_at(
        self, uri: str, position: lsp.Position
    ) -> tuple[TextDocument, Document, ServerTextPosition] | None:
        """The document and the position a request names, in the server's own units."""
        opened = self.document(uri)
        if opened is None:
            return None
        return (*opened, opened[0].position_from_client_units(position))

    def schedule_check(self, uri: str, delay: float = DEBOUNCE) -> None:
        previous = self.checks.pop(uri, None)
        if previous is not None:
            previous.cancel()
        self.checks[uri] = asyncio.ensure_future(self.check(uri, delay))

    async def check(self, uri: str, delay: float) -> None:
        await asyncio.sleep(delay)
        opened = self.document(uri)
        if opened is None:
            return
        text_document, doc = opened
        version = text_document.version
        found = await asyncio.get_running_loop().run_in_executor(None, _diagnose, doc)
        if found is None or self.workspace.get_text_document(uri).version != version:
            return
        self.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(
                uri=uri,
                version=version,
                diagnostics=[_diagnostic(text_document, doc, p) for p in found],
            )
        )
        self.checks.pop(uri, None)

    def saved_file(self, uri: str) -> Document:
        """The document of a lens command: as saved (the command reads the file)."""
        opened = self.document(uri)
        if opened is None:
            raise DomarkxError(f"{uri} is not a file on this machine")
        _, doc = opened
        try:
            saved = open_document(doc.path, doc.path.read_text(encoding="utf-8")).text
        except (OSError, UnicodeDecodeError):
            saved = None
        if saved != doc.text:
            raise DomarkxError(
                "the document has unsaved changes",
                file=doc.display,
                hint="save it first: the command works on the file, as on the command line",
            )
        return doc

    def perform(self, title: str, work: Any) -> dict[str, Any]:
        """Run a lens command: its result, or its error (to the log and shown), never a trace."""
        try:
            result: dict[str, Any] = work()
        except DomarkxError as err:
            self.log(f"domarkx: error: {err}")
            self.window_show_message(
                lsp.ShowMessageParams(type=lsp.MessageType.Error, message=f"{title}: {err}")
            )
            return {"error": str(err)}
        except KeyboardInterrupt as interrupt:  # SIGTERM while a command runs
            self.log(f"domarkx: interrupted ({interrupt})")
            raise
        self.log(result["message"])
        return result


def _uri(args: tuple[Any, ...]) -> str:
    """A lens command's first argument: the document (an editor's own call may lack it)."""
    if not args or not isinstance(args[0], str):
        raise UsageError(
            "the command needs the document's URI as its first argument",
            hint="run it from the code lens above a message",
        )
    return args[0]


def _count(args: tuple[Any, ...]) -> int:
    if len(args) < 2 or not isinstance(args[1], int) or isinstance(args[1], bool):
        raise UsageError(
            "Fork here needs the number of messages to keep as its second argument",
            hint="run it from the code lens above a message",
        )
    return args[1]


def _diagnose(doc: Document) -> list[Problem] | None:
    """The document's problems; None for a file that is not a session."""
    if not doc.is_session:
        return None
    return problems(doc)


def _line_range(text_document: TextDocument, doc: Document, line: int) -> lsp.Range:
    index = max(0, min(line - 1, len(doc.lines) - 1))
    return text_document.range_to_client_units(
        ServerTextRange(
            ServerTextPosition(index, 0), ServerTextPosition(index, len(doc.lines[index]))
        )
    )


def _diagnostic(text_document: TextDocument, doc: Document, problem: Problem) -> lsp.Diagnostic:
    message = problem.message
    related = None
    if problem.elsewhere is not None:
        where = problem.elsewhere
        if problem.elsewhere_line:
            where += f":{problem.elsewhere_line}"
        message = f"{where}: {message}"
        target = (doc.root / problem.elsewhere).resolve()
        if target.is_file():
            line = max(0, (problem.elsewhere_line or 1) - 1)
            related = [
                lsp.DiagnosticRelatedInformation(
                    location=lsp.Location(
                        uri=from_fs_path(str(target)) or target.as_uri(),
                        range=lsp.Range(lsp.Position(line, 0), lsp.Position(line + 1, 0)),
                    ),
                    message="here",
                )
            ]
    if problem.hint:
        message += f"\nhint: {problem.hint}"
    return lsp.Diagnostic(
        range=_line_range(text_document, doc, problem.line),
        message=message,
        severity=lsp.DiagnosticSeverity.Error,
        source="domarkx",
        related_information=related,
    )


def make_server() -> DomarkxServer:
    server = DomarkxServer()

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: DomarkxServer, params: lsp.DidOpenTextDocumentParams) -> None:
        ls.schedule_check(params.text_document.uri, 0)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: DomarkxServer, params: lsp.DidChangeTextDocumentParams) -> None:
        ls.schedule_check(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: DomarkxServer, params: lsp.DidSaveTextDocumentParams) -> None:
        # An included file may have changed: every open document is checked again.
        for uri in list(ls.workspace.text_documents):
            ls.schedule_check(uri, 0)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: DomarkxServer, params: lsp.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        task = ls.checks.pop(uri, None)
        if task is not None:
            task.cancel()
        ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    @server.feature(lsp.TEXT_DOCUMENT_CODE_LENS)
    def code_lens(ls: DomarkxServer, params: lsp.CodeLensParams) -> list[lsp.CodeLens]:
        opened = ls.document(params.text_document.uri)
        if opened is None or not opened[1].is_session:
            return []
        return [
            lsp.CodeLens(
                range=lsp.Range(lsp.Position(lens.line, 0), lsp.Position(lens.line, 0)),
                command=lsp.Command(
                    title=lens.title, command=lens.command, arguments=lens.arguments
                ),
            )
            for lens in features.lenses(opened[1], params.text_document.uri)
        ]

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    def hover(ls: DomarkxServer, params: lsp.HoverParams) -> lsp.Hover | None:
        located = ls.document_at(params.text_document.uri, params.position)
        if located is None:
            return None
        text_document, doc, at = located
        text = features.hover(doc, at.line, at.character)
        if text is None:
            return None
        range_ = None
        macro = features.macro_at(doc, at.line, at.character)
        if macro is not None:
            range_ = text_document.range_to_client_units(
                ServerTextRange(
                    ServerTextPosition(macro.line, macro.start),
                    ServerTextPosition(macro.line, macro.end),
                )
            )
        return lsp.Hover(
            contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text), range=range_
        )

    @server.feature(
        lsp.TEXT_DOCUMENT_COMPLETION,
        lsp.CompletionOptions(trigger_characters=[" ", "/", "=", ":", "#"]),
    )
    def completion(ls: DomarkxServer, params: lsp.CompletionParams) -> lsp.CompletionList:
        located = ls.document_at(params.text_document.uri, params.position)
        items: list[lsp.CompletionItem] = []
        if located is not None:
            _, doc, at = located
            items = [
                lsp.CompletionItem(label=c.label, kind=_KINDS[c.kind], detail=c.detail or None)
                for c in features.complete(doc, at.line, at.character)
            ]
        return lsp.CompletionList(is_incomplete=False, items=items)

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: DomarkxServer, params: lsp.DefinitionParams) -> lsp.Location | None:
        located = ls.document_at(params.text_document.uri, params.position)
        if located is None:
            return None
        _, doc, at = located
        macro = features.macro_at(doc, at.line, at.character)
        target = features.include_target(doc, macro) if macro is not None else None
        if target is None:
            return None
        uri = from_fs_path(str(target)) or target.as_uri()
        return lsp.Location(uri=uri, range=lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)))

    @server.thread()
    @server.command(features.ANSWER)
    def answer(ls: DomarkxServer, *args: Any) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            doc = ls.saved_file(_uri(args))
            return {"message": actions.answer(doc.path, ls), "file": str(doc.path)}

        return ls.perform("Answer", work)

    @server.thread()
    @server.command(features.REGENERATE)
    def regenerate(ls: DomarkxServer, *args: Any) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            doc = ls.saved_file(_uri(args))
            message = actions.answer(doc.path, ls, regenerate=True)
            return {"message": message, "file": str(doc.path)}

        return ls.perform("Regenerate", work)

    @server.thread()
    @server.command(features.FORK)
    def fork(ls: DomarkxServer, *args: Any) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            doc = ls.saved_file(_uri(args))
            output = actions.fork_here(doc.path, _count(args))
            uri = from_fs_path(str(output)) or output.as_uri()
            with contextlib.suppress(Exception):  # an editor that cannot show it: it is there
                ls.window_show_document(lsp.ShowDocumentParams(uri=uri, take_focus=True))
            shown = os.path.relpath(output, doc.root)
            return {"message": f"forked {doc.display} into {shown}", "file": str(output)}

        return ls.perform("Fork here", work)

    @server.thread()
    @server.command(features.RUN)
    def run(ls: DomarkxServer, *args: Any) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            doc = ls.saved_file(_uri(args))
            return {"message": actions.run(doc.path, ls), "file": str(doc.path)}

        return ls.perform("Run", work)

    return server


def serve() -> None:
    """Speak LSP on stdin/stdout until the client exits.

    The protocol gets its own copy of stdout; file descriptor 1 and ``sys.stdout``
    then go to stderr, so that nothing a command prints (or a child process it
    starts) can corrupt the stream of messages.
    """
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    make_server().start_io(sys.stdin.buffer, protocol_out)
