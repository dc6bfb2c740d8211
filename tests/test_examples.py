"""This repository's example sessions (``sessions/``): each imports, round-trips and runs,
and shows the features it claims.

An example lists what it shows in its front matter (``features: [...]``); every
name must be in ``STATIC`` (checked on the snapshot) or ``RUNTIME`` (checked on
a run with the local shell engine), and together the examples must show every
feature of both catalogues.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from domarkx.data.models import (
    CodeBlock,
    Message,
    OutputBlock,
    SessionInstance,
    SessionSnapshot,
    TextBlock,
)
from domarkx.data.store import Store
from domarkx.execution.engine import canonical_language
from domarkx.session.export import render
from domarkx.session.names import is_partial, session_files, session_name
from domarkx.session.snapshot import SnapshotManager

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = session_files(ROOT)
NAMES = [session_name(path, ROOT) for path in SESSIONS]
BUILTIN_MACROS = {"include", "set", "date"}
MACRO = re.compile(r"\(domarkx://([^?)/]+)")


@dataclass
class Example:
    name: str
    source: str
    snapshot: SessionSnapshot
    included: list[str]

    @property
    def features(self) -> list[str]:
        return list(self.snapshot.metadata.user_metadata.get("features") or [])

    @property
    def config(self) -> dict:
        return self.snapshot.content_dict()["execution_config"] or {}

    @property
    def sources(self) -> str:
        """The document and every file it includes."""
        return "\n".join([self.source, *((ROOT / p).read_text() for p in self.included)])

    def blocks(self, *roles: str) -> list[tuple[str, object]]:
        return [
            (m.role, b)
            for m in self.snapshot.conversation
            if not roles or m.role in roles
            for b in m.content
        ]

    def code(self, *roles: str) -> list[CodeBlock]:
        return [b for _, b in self.blocks(*roles) if isinstance(b, CodeBlock)]

    def texts(self) -> list[TextBlock]:
        return [b for _, b in self.blocks() if isinstance(b, TextBlock)]

    def headings(self) -> list[str]:
        return re.findall(r"^## (.+?)\s*$", self.source, re.M)

    def runnable(self, language: str) -> int:
        count = sum(
            1
            for role, b in self.blocks()
            if isinstance(b, CodeBlock)
            and canonical_language(b.language) == language
            and "norun" not in b.flags
            and (role == "assistant" or "run" in b.flags)
        )
        setup = self.snapshot.setup_script
        return count + (setup is not None and canonical_language(setup.language) == language)


def _tool_calls(example: Example) -> bool:
    calls = {
        call.get("id")
        for m in example.snapshot.conversation
        if m.role == "assistant" and m.message_metadata
        for call in m.message_metadata.get("content") or []
        if isinstance(call, dict) and {"id", "name", "arguments"} <= set(call)
    }
    answers = {
        result.get("call_id")
        for m in example.snapshot.conversation
        if m.role == "tool" and m.message_metadata
        for result in m.message_metadata.get("content") or []
        if isinstance(result, dict)
    }
    return bool(calls & answers)


def _included_code(example: Example) -> bool:
    codes = {b.code for b in example.code()}
    for path in example.included:
        for found in re.findall(r"```\w*[^\n]*\n(.*?)\n```", (ROOT / path).read_text(), re.S):
            if found in codes:
                return True
    return False


STATIC: dict[str, Callable[[Example], bool]] = {
    "front-matter": lambda e: bool(set(e.snapshot.metadata.user_metadata) - {"features"}),
    "preamble": lambda e: bool(e.snapshot.preamble),
    "yaml-config": lambda e: bool(e.config) and e.snapshot.config_format == "yaml",
    "json-config": lambda e: bool(e.config) and e.snapshot.config_format == "json",
    "legacy-config-keys": lambda e: {"type", "version", "llm_context"} <= set(e.config),
    "setup-script": lambda e: e.snapshot.setup_script is not None,
    "system": lambda e: any(m.role == "system" for m in e.snapshot.conversation),
    "user": lambda e: any(m.role == "user" for m in e.snapshot.conversation),
    "assistant": lambda e: any(m.role == "assistant" for m in e.snapshot.conversation),
    "tool": lambda e: any(m.role == "tool" for m in e.snapshot.conversation),
    "system-message-heading": lambda e: "system_message" in e.headings(),
    "heading-case": lambda e: any(h != h.lower() for h in e.headings()),
    "quoted-text": lambda e: any(t.quoted for t in e.texts()),
    "plain-text": lambda e: any(not t.quoted for t in e.texts()),
    "markdown-in-text": lambda e: any(
        "### " in t.value and "|---" in t.value and "\n- " in t.value for t in e.texts()
    ),
    "code-name": lambda e: any(b.name for b in e.code()),
    "code-attrs": lambda e: any(b.attrs for b in e.code()),
    "norun": lambda e: any("norun" in b.flags for b in e.code("assistant")),
    "run": lambda e: any("run" in b.flags for b in e.code("user", "system", "tool")),
    "long-fence": lambda e: any("```" in b.code for b in e.code()),
    "msg-metadata": lambda e: any(m.message_metadata for m in e.snapshot.conversation),
    "tool-calls": _tool_calls,
    "output-block": lambda e: any(isinstance(b, OutputBlock) for _, b in e.blocks()),
    "set-macro": lambda e: "(domarkx://set?" in e.sources or "(domarkx://set)" in e.sources,
    "param-macro": lambda e: bool(set(MACRO.findall(e.source)) - BUILTIN_MACROS),
    "extra-param-link": lambda e: re.search(r"\(domarkx://[^)\s]*\)\[", e.source) is not None,
    "recursive-macro": lambda e: any(
        "domarkx://" in str(v)
        for v in (e.snapshot.metadata.user_metadata.get("params") or {}).values()
    ),
    "macro-in-code": lambda e: any("domarkx://" in b.code for b in e.code()),
    "include": lambda e: bool(e.included),
    "nested-include": lambda e: any(
        "domarkx://include" in (ROOT / p).read_text() for p in e.included
    ),
    "include-code": _included_code,
    "include-in-preamble": lambda e: (
        "domarkx://include" in e.source.split("\n## ", 1)[0].split("---", 2)[-1]
    ),
    "bash-state": lambda e: e.runnable("bash") >= 3,
    "python-state": lambda e: e.runnable("python") >= 2,
    "on-error-continue": lambda e: e.config.get("on_error") == "continue",
    "nested-session": lambda e: "/" in e.name,
    "model": lambda e: bool(e.config.get("model")),
    "tools": lambda e: bool(e.config.get("tools")) and e.snapshot.setup_script is not None,
    "recorded-model": lambda e: (
        e.config.get("model", {}).get("provider") == "openai"
        and e.snapshot.conversation[-1].role == "user"
    ),
    "checks": lambda e: any("expect" in b.flags for b in e.code("user")),
    "scripted-replies": lambda e: (
        e.config.get("model", {}).get("provider") == "scripted"
        and bool(e.snapshot.metadata.user_metadata.get("scripted_replies"))
        and e.snapshot.conversation[-1].role == "user"
    ),
}


def _outputs(instance: SessionInstance) -> list[OutputBlock]:
    return [b for m in instance.conversation for b in m.content if isinstance(b, OutputBlock)]


RUNTIME: dict[str, Callable[[Example, SessionInstance], bool]] = {
    "stderr": lambda e, i: any(o.stream == "stderr" and o.text for o in _outputs(i)),
    "exit-code": lambda e, i: any(o.exit_code not in (0, None, 124) for o in _outputs(i)),
    "timeout": lambda e, i: any(o.timed_out for o in _outputs(i)),
    "tool-results": lambda e, i: any(
        m.role == "tool" and not (m.message_metadata or {}).get("is_error") for m in i.conversation
    ),
}


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, Example]:
    """Every example, imported from this repository into a throwaway store."""
    store = Store(tmp_path_factory.mktemp("examples"), ROOT)
    manager = SnapshotManager(store)
    loaded = {}
    for name, path in zip(NAMES, SESSIONS, strict=True):
        result = manager.import_file(path)
        source = path.read_text(encoding="utf-8")
        loaded[name] = Example(name, source, result.snapshot, result.included)
    return loaded


def test_there_are_examples_and_partials_are_not_sessions():
    assert {"tour", "legacy-format", "includes", "params", "shell-state"} <= set(NAMES)
    assert all(not is_partial(Path(name)) for name in NAMES)
    assert (ROOT / "sessions" / "_partials").is_dir()


@pytest.mark.parametrize("name", NAMES)
def test_example_imports_and_shows_what_it_claims(name, examples):
    example = examples[name]
    assert example.features, f"{name} lists no features in its front matter"
    unknown = set(example.features) - set(STATIC) - set(RUNTIME)
    assert not unknown, f"{name} claims features no test knows: {unknown}"
    missing = [f for f in example.features if f in STATIC and not STATIC[f](example)]
    assert not missing, f"{name} claims {missing} but does not show them"


def test_the_examples_show_every_feature(examples):
    claimed = {feature for example in examples.values() for feature in example.features}
    assert set(STATIC) | set(RUNTIME) <= claimed, sorted(set(STATIC) | set(RUNTIME) - claimed)


@pytest.mark.parametrize("name", NAMES)
def test_example_round_trips(name, examples, tmp_path):
    snapshot = examples[name].snapshot
    exported = render(snapshot)
    path = ROOT / "sessions" / f"{name}.md"
    copy = tmp_path / "sessions" / path.relative_to(ROOT / "sessions")
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(exported, encoding="utf-8")
    # The project's configuration goes along: a judge check names one of its endpoints.
    shutil.copy(ROOT / "domarkx.toml", tmp_path / "domarkx.toml")
    store = Store(tmp_path / ".domarkx", tmp_path)
    again = SnapshotManager(store).import_file(copy).snapshot
    assert again.snapshot_id == snapshot.snapshot_id
    assert render(again) == exported


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each example run twice with the local shell engine, as the build runs them."""
    from domarkx.session.agents import Agents
    from domarkx.session.approval import Approval
    from domarkx.session.instance import InstanceManager

    done: dict[str, tuple[SessionInstance, SessionInstance]] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOMARKX_LLM", "replay")  # a model call that needs the network fails
        for name, path in zip(NAMES, SESSIONS, strict=True):
            pair = []
            for attempt in (1, 2):
                store = Store(tmp_path_factory.mktemp(f"run-{attempt}"), ROOT)
                # The committed replay records, as a checkout has them.
                if (ROOT / ".domarkx" / "replay").is_dir():
                    shutil.copytree(ROOT / ".domarkx" / "replay", store.replay_dir)
                imported = SnapshotManager(store).import_file(path)
                # The repository's domarkx.toml grants its models' code (approve = "auto"),
                # as its CI trusts that file.
                manager = InstanceManager(store, approval=Approval(mode="auto"))
                # The session tools, in the run's own workspace, as a build gives them.
                manager.host_tools = Agents.for_build(store, name, manager.approval).tools()
                pair.append(manager.run(imported.snapshot.snapshot_id))
            done[name] = (pair[0], pair[1])
    return done


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_offline_and_gives_the_same_export_twice(name, examples, runs):
    example = examples[name]
    first, second = runs[name]
    assert first.status == "exited", first.error
    snapshot = example.snapshot
    assert render(snapshot, first.conversation) == render(snapshot, second.conversation)
    if "exit-code" not in example.features and "timeout" not in example.features:
        failed = [o for o in _outputs(first) if o.exit_code not in (0, None)]
        assert not failed, f"{name}: a block failed: {failed}"
    missing = [f for f in example.features if f in RUNTIME and not RUNTIME[f](example, first)]
    assert not missing, f"{name} claims {missing} but its run does not show them"
    if {"run"} & set(example.features):
        assert _ran_user_block(first.conversation)
    if {"model", "scripted-replies"} & set(example.features):
        assert len(first.conversation) > len(snapshot.conversation)
        assert first.conversation[-1].role == "assistant"


def _ran_user_block(conversation: list[Message]) -> bool:
    for message in conversation:
        if message.role == "assistant":
            continue
        for block, after in zip(message.content, message.content[1:], strict=False):
            if (
                isinstance(block, CodeBlock)
                and "run" in block.flags
                and isinstance(after, OutputBlock)
            ):
                return True
    return False


# The examples of docs/session-format.md -------------------------------------------------

DOC = ROOT / "docs" / "session-format.md"


def _doc_blocks(info: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"^(`{{3,}}){re.escape(info)}\n(.*?)\n\1$", text, re.S | re.M)


def test_the_reference_example_imports_and_round_trips(tmp_path):
    document = _doc_blocks("markdown")[0][1]
    (tmp_path / "sessions").mkdir()
    path = tmp_path / "sessions" / "doc.md"
    path.write_text(document + "\n", encoding="utf-8")
    manager = SnapshotManager(Store(tmp_path / ".domarkx", tmp_path))
    snapshot = manager.import_file(path).snapshot
    assert [m.role for m in snapshot.conversation] == ["system", "user", "assistant"]
    assert snapshot.preamble is not None and snapshot.preamble.startswith("# Listing a folder")
    path.write_text(render(snapshot), encoding="utf-8")
    assert manager.import_file(path).snapshot.snapshot_id == snapshot.snapshot_id


def test_the_documented_snapshot_and_id_recipe_agree():
    import hashlib
    import json

    data = json.loads(_doc_blocks("json")[-1][1])
    assert SessionSnapshot.model_validate(data).compute_id() == data["snapshot_id"]
    del data["snapshot_id"], data["metadata"]["import_timestamp"], data["metadata"]["source_file"]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert (
        hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        == json.loads(_doc_blocks("json")[-1][1])["snapshot_id"]
    )
