"""``domarkx import``, ``snapshots``, ``export`` and ``schema`` through the real command."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from domarkx.data.models import Message, SessionInstance, TextBlock
from domarkx.data.store import Store
from domarkx.session.snapshot import SnapshotManager

SESSION = """\
---
title: Greeting
---

```yaml session-config
timeout: 30
```

## system

> You are brief.

## user

> Say hello to [@who](domarkx://who).

## assistant

```bash name=hello.sh
echo hello
```
"""
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def greeting(project):
    return project({"sessions/greeting.md": SESSION})


def import_ok(cli, *args, **kwargs) -> str:
    code, out, err = cli("import", *args, **kwargs)
    assert (code, err) == (0, ""), err
    snapshot_id = out.strip()
    assert HEX64.match(snapshot_id), out
    assert out == snapshot_id + "\n"
    return snapshot_id


def snapshot_file(root, snapshot_id):
    return root / ".domarkx" / "snapshots" / f"{snapshot_id}.json"


# import -------------------------------------------------------------------------------


def test_import_prints_the_id_and_stores_the_snapshot(cli, greeting):
    snapshot_id = import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    data = json.loads(snapshot_file(greeting, snapshot_id).read_text(encoding="utf-8"))
    assert data["snapshot_id"] == snapshot_id
    assert data["version"] == "1.0"
    assert data["metadata"]["source_file"] == "sessions/greeting.md"
    assert data["metadata"]["user_metadata"] == {"title": "Greeting"}
    assert data["execution_config"] == {"timeout": 30.0}
    assert [m["role"] for m in data["conversation"]] == ["system", "user", "assistant"]
    assert data["conversation"][1]["content"][0]["value"] == "Say hello to ana."
    assert data["conversation"][2]["content"][0] == {
        "type": "code",
        "language": "bash",
        "name": "hello.sh",
        "code": "echo hello",
        "attrs": {},
        "flags": [],
    }
    assert (greeting / ".domarkx" / "tags" / "greeting").read_text().strip() == snapshot_id


def test_a_parameter_changes_the_id(cli, greeting):
    first = import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    second = import_ok(cli, "sessions/greeting.md", "--param", "who=bo")
    assert first != second
    assert import_ok(cli, "sessions/greeting.md", "--param", "who=ana") == first


def test_a_malformed_param_option_is_refused(cli, greeting):
    code, out, err = cli("import", "sessions/greeting.md", "--param", "who")
    assert code == 2 and out == ""  # bad usage, as the spec's exit statuses say
    assert "--param 'who' is not KEY=VALUE" in err
    assert "Traceback" not in err


def test_same_content_same_id_from_any_path_and_any_folder(cli, greeting, tmp_path):
    snapshot_id = import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    (greeting / "sessions" / "deep" / "er").mkdir(parents=True)
    copy = greeting / "sessions" / "deep" / "er" / "copy.md"
    copy.write_text(SESSION, encoding="utf-8")
    assert import_ok(cli, copy, "--param", "who=ana") == snapshot_id  # absolute path
    assert import_ok(cli, "er/copy.md", "--param", "who=ana", cwd=copy.parent.parent) == snapshot_id
    # Another project on another "machine": another folder, another store.
    elsewhere = tmp_path / "elsewhere" / "project"
    (elsewhere / "sessions").mkdir(parents=True)
    (elsewhere / "sessions" / "x.md").write_text(SESSION, encoding="utf-8")
    other = import_ok(
        cli,
        "sessions/x.md",
        "--param",
        "who=ana",
        cwd=elsewhere,
        env={"DOMARKX_HOME": str(elsewhere / ".domarkx")},
    )
    assert other == snapshot_id


def test_crlf_gives_the_same_id(cli, greeting):
    lf = import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    (greeting / "sessions" / "crlf.md").write_bytes(SESSION.replace("\n", "\r\n").encode())
    assert import_ok(cli, "sessions/crlf.md", "--param", "who=ana") == lf


def test_source_date_epoch_makes_the_snapshot_file_byte_identical(cli, greeting, tmp_path):
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    first = import_ok(cli, "sessions/greeting.md", "--param", "who=ana", env=env)
    data = snapshot_file(greeting, first).read_bytes()
    assert json.loads(data)["metadata"]["import_timestamp"] == "2023-11-14T22:13:20+00:00"
    store2 = tmp_path / "store2"
    second = import_ok(
        cli, "sessions/greeting.md", "--param", "who=ana", env={**env, "DOMARKX_HOME": str(store2)}
    )
    assert second == first
    assert (store2 / "snapshots" / f"{first}.json").read_bytes() == data


def test_the_store_is_found_from_the_current_folder(cli, greeting):
    sub = greeting / "sessions"
    code, out, _ = cli(
        "import", "greeting.md", "--param", "who=ana", cwd=sub, env={"DOMARKX_HOME": None}
    )
    assert code == 0
    assert snapshot_file(greeting, out.strip()).is_file()
    assert not (sub / ".domarkx").exists()


def test_tags(cli, project):
    root = project({"sessions/team/intro.md": "## user\n\nhi\n", "notes.md": "## user\n\nnote\n"})
    intro = import_ok(cli, "sessions/team/intro.md")
    note = import_ok(cli, "notes.md")
    custom = import_ok(cli, "sessions/team/intro.md", "--tag", "v1", "--tag", "latest")
    assert custom == intro
    tags = {p.name: p.read_text().strip() for p in (root / ".domarkx" / "tags").iterdir()}
    # A session's name is its path under sessions/ (quoted in the file name); else the file stem.
    assert tags == {"team%2Fintro": intro, "notes": note, "v1": intro, "latest": intro}
    for ref in ("team/intro", "v1", "latest"):
        code, out, _ = cli("export", ref)
        assert (code, out) == (0, "## user\n\nhi\n")


# snapshots ------------------------------------------------------------------------------


def test_snapshots_table_and_json(cli, project):
    project({"sessions/a.md": "## user\n\na\n", "sessions/b.md": "## user\n\nb\n"})
    code, out, err = cli("snapshots")
    assert (code, out, err) == (0, "SNAPSHOT ID   SOURCE FILE   CREATED   TAGS\n", "")
    a = import_ok(cli, "sessions/a.md", env={"SOURCE_DATE_EPOCH": "1700000000"})
    b = import_ok(cli, "sessions/b.md", "--tag", "bee", env={"SOURCE_DATE_EPOCH": "1700000100"})
    code, out, err = cli("snapshots")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert re.split(r"\s{3,}", lines[0]) == ["SNAPSHOT ID", "SOURCE FILE", "CREATED", "TAGS"]
    rows = [re.split(r"\s{3,}", line) for line in lines[1:]]
    assert (
        rows
        == [  # newest first
            [b[:12], "sessions/b.md", "2023-11-14T22:15:00+00:00", "bee"],
            [a[:12], "sessions/a.md", "2023-11-14T22:13:20+00:00", "a"],
        ]
    )
    code, out, _ = cli("snapshots", "--json")
    assert json.loads(out) == [
        {
            "snapshot_id": b,
            "source_file": "sessions/b.md",
            "created": "2023-11-14T22:15:00+00:00",
            "tags": ["bee"],
        },
        {
            "snapshot_id": a,
            "source_file": "sessions/a.md",
            "created": "2023-11-14T22:13:20+00:00",
            "tags": ["a"],
        },
    ]


# export and refs --------------------------------------------------------------------------


def test_export_by_id_prefix_and_tag(cli, greeting):
    snapshot_id = import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    outputs = {ref: cli("export", ref) for ref in (snapshot_id, snapshot_id[:7], "greeting")}
    for code, _, err in outputs.values():
        assert (code, err) == (0, "")
    texts = {out for _, out, _ in outputs.values()}
    assert len(texts) == 1
    text = texts.pop()
    assert text.startswith(
        "---\ntitle: Greeting\n---\n\n```yaml session-config\ntimeout: 30\n```\n"
    )
    assert "> Say hello to ana.\n" in text
    assert text.endswith("## assistant\n\n```bash name=hello.sh\necho hello\n```\n")


def test_export_round_trips_through_the_command(cli, greeting):
    snapshot_id = import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    code, out, err = cli("export", "greeting", "-o", "sessions/exported.md")
    assert (code, out, err) == (0, "", "")
    first = (greeting / "sessions" / "exported.md").read_text(encoding="utf-8")
    assert import_ok(cli, "sessions/exported.md") == snapshot_id
    code, second, _ = cli("export", "exported")
    assert second == first


def test_export_with_a_template_of_ones_own(cli, greeting):
    import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    (greeting / "brief.md.j2").write_text(
        "# {{ front_matter.title }}\n{% for m in conversation %}\n- {{ m.role }}: "
        "{{ m.content | length }} block(s)\n{% endfor %}\n",
        encoding="utf-8",
    )
    code, out, err = cli("export", "greeting", "--template", "brief.md.j2")
    assert (code, err) == (0, "")
    assert (
        out
        == "# Greeting\n\n- system: 1 block(s)\n\n- user: 1 block(s)\n\n- assistant: 1 block(s)\n"
    )


def test_compiled_templates_are_kept_per_user_and_follow_an_edit(
    cli, cli_process, greeting, tmp_path
):
    """A template is compiled once per user (in jinja2's folder of the user's own, never in
    the project): the next process reads the compiled code, an edited template is
    compiled again, and a damaged compiled file is only compiled again."""
    import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    template = greeting / "brief.md.j2"
    template.write_text("first {{ front_matter.title }}\n", encoding="utf-8")
    code, out, err = cli_process("export", "greeting", "--template", "brief.md.j2", env=env)
    assert (code, out, err) == (0, "first Greeting\n", "")
    compiled = sorted(temp.glob("_jinja2-cache-*/__domarkx_*.cache"))
    assert len(compiled) == 1  # the user's template (the built-in one was not rendered)
    assert not list(greeting.rglob("*.cache"))
    template.write_text("second {{ front_matter.title }}\n", encoding="utf-8")
    code, out, err = cli_process("export", "greeting", "--template", "brief.md.j2", env=env)
    assert (code, out, err) == (0, "second Greeting\n", "")
    compiled[0].write_bytes(b"not compiled code")
    code, out, err = cli_process("export", "greeting", "--template", "brief.md.j2", env=env)
    assert (code, out, err) == (0, "second Greeting\n", "")


def test_a_broken_template_is_one_clear_error(cli, greeting):
    import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    (greeting / "bad.j2").write_text("line one\n{% for x in %}\n", encoding="utf-8")
    code, out, err = cli("export", "greeting", "--template", "bad.j2")
    assert (code, out) == (1, "")
    assert err.startswith("domarkx: error: ")
    assert ":2: template error" in err
    assert "Traceback" not in err


@pytest.fixture
def two_with_a_common_prefix(project):
    """Two snapshots whose ids start with the same hex digit (found in process)."""
    root = project()
    manager = SnapshotManager(Store(root / ".domarkx", root))
    seen: dict[str, str] = {}
    for n in range(17):  # 17 ids, 16 first digits: two must share one
        path = root / "sessions" / f"s{n}.md"
        path.write_text(f"## user\n\nmessage {n}\n", encoding="utf-8")
        snapshot_id = manager.import_file(path).snapshot.snapshot_id
        if snapshot_id[0] in seen:
            return seen[snapshot_id[0]], snapshot_id
        seen[snapshot_id[0]] = snapshot_id
    raise AssertionError("unreachable")


def test_an_ambiguous_prefix_lists_the_candidates(cli, two_with_a_common_prefix):
    first, second = two_with_a_common_prefix
    common = next(i for i in range(64) if first[i] != second[i])
    code, out, err = cli("export", first[:common])
    assert (code, out) == (1, "")
    assert err.startswith(f"domarkx: error: {first[:common]!r} matches 2 snapshots")
    assert first[:12] in err and second[:12] in err
    assert "Traceback" not in err
    code, out, _ = cli("export", first[: common + 1])
    assert code == 0 and out.startswith("## user")


@pytest.mark.parametrize("ref", ["nothing-like-this", "0000000000000000zz", ""])
def test_an_unknown_ref(cli, greeting, ref):
    import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    code, out, err = cli("export", ref)
    assert (code, out) == (1, "")
    assert err.startswith("domarkx: error: ")
    assert len([line for line in err.splitlines() if line.startswith("domarkx: error:")]) == 1
    assert "Traceback" not in err


def test_an_unknown_ref_names_both_kinds_export_takes(cli, greeting):
    # `domarkx export` takes an instance or a snapshot: an id that names neither
    # (an instance id copied from another machine) must not say "no snapshot".
    import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    code, out, err = cli("export", "c1b9")
    assert (code, out) == (1, "")
    assert err.startswith("domarkx: error: no instance or snapshot matches 'c1b9'\n")
    assert "domarkx instances --all" in err and "domarkx snapshots" in err


def test_a_tag_wins_over_an_instance_id_prefix(cli, project):
    # A session named like a hex prefix ("add") must export as the snapshot it tags.
    root = project({"sessions/add.md": "## user\n\nthe snapshot\n"})
    snapshot_id = import_ok(cli, "sessions/add.md")
    Store(root / ".domarkx", root).put_instance(
        SessionInstance(
            instance_id="add" + "0" * 61,
            snapshot_id=snapshot_id,
            created_at="2023-11-14T22:13:20+00:00",
            conversation=[Message(role="user", content=[TextBlock(value="the instance")])],
        )
    )
    assert cli("export", "add").out == "## user\n\nthe snapshot\n"
    assert cli("export", "add0").out == "## user\n\nthe instance\n"


# schema, usage, entry points ------------------------------------------------------------


def test_schema(cli, project):
    project()
    code, out, err = cli("schema")
    assert (code, err) == (0, "")
    schema = json.loads(out)
    assert schema["title"] == "SessionSnapshot"
    assert {"version", "snapshot_id", "metadata", "conversation", "preamble"} <= set(
        schema["properties"]
    )
    assert {"TextBlock", "CodeBlock", "OutputBlock", "Message"} <= set(schema["$defs"])
    code, out, _ = cli("schema", "--instance")
    assert code == 0 and json.loads(out)["title"] == "SessionInstance"


def test_the_snapshot_file_validates_against_the_schema(cli, greeting):
    import jsonschema

    snapshot_id = import_ok(cli, "sessions/greeting.md", "--param", "who=ana")
    schema = json.loads(cli("schema").out)
    jsonschema.validate(json.loads(snapshot_file(greeting, snapshot_id).read_text()), schema)


def test_bad_usage_is_status_2(cli, project):
    project()
    assert cli().code == 2
    code, _, err = cli("import")
    assert code == 2 and "usage:" in err
    assert cli("no-such-command").code == 2


def test_the_domarkx_command_is_installed(greeting):
    # The script sits beside the interpreter that runs the tests (the README runs
    # `.venv/bin/python -m pytest` without the venv on PATH).
    beside = Path(sys.executable).with_name("domarkx")
    exe = str(beside) if beside.is_file() else shutil.which("domarkx")
    if exe is None:
        pytest.skip(f"no domarkx script beside {sys.executable} nor on PATH (pip install -e .)")
    done = subprocess.run(
        [exe, "import", "sessions/greeting.md", "--param", "who=ana"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and HEX64.match(done.stdout.strip())
    assert subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.startswith(
        "domarkx "
    )
