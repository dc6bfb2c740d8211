"""Checks in runs, ``domarkx test``, JUnit XML and the pytest plugin, end to end.

The model and the judge are the loopback chat-completions server
(tests/chat_server.py) behind the real ``openai`` client; code runs in a
real local-shell sandbox; nothing is patched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points

from domarkx.data.store import Store
from tests.chat_server import ChatServer
from tests.junit_support import validate_junit
from tests.support import process_env

SESSION = """\
```yaml session-config
timeout: 10
model: {{provider: openai, name: test-model, endpoint: test, temperature: 0, max_turns: 4}}
tools: [add]
```

```python setup-script
def add(a: int, b: int) -> int:
    \"\"\"Add two numbers.\"\"\"
    return a + b
```

## user

> Add 2 and 2 with the tool, then save the sum to sum.txt.

```yaml expect
{checks}
```
"""

CHECKS = """\
- tool-called: add
  args: {a: 2, b: 2}
- contains: "4"
- not-contains: sorry
- regex: '\\b4\\b'
- sh: test "$(cat sum.txt)" = 4
- python: assert open("sum.txt").read().strip() == "4"
- max-tokens: 400
- judge: The reply states the sum."""

CONFIG = """\
approve = "auto"

[endpoints.test]
base_url = "{base_url}"

[checks]
judge_endpoint = "test"
judge_model = "judge-model"
"""


def files(base_url: str, checks: str = CHECKS) -> dict[str, str]:
    return {
        "sessions/add.md": SESSION.format(checks=checks),
        "domarkx.toml": CONFIG.format(base_url=base_url),
    }


def answer(server: ChatServer, *, saves: str = "4", says: str = "The sum is 4.") -> None:
    """One model turn: call add, write sum.txt, say the sum."""
    server.call(("add", {"a": 2, "b": 2}), usage={"prompt_tokens": 50, "completion_tokens": 20})
    server.reply(f"Saving:\n\n```bash\necho {saves} > sum.txt\n```", says)


def verdict(passed: bool, reason: str) -> str:
    return json.dumps({"pass": passed, "reason": reason})


def test_every_kind_passes_and_the_run_records_it(project, cli, tmp_path):
    with ChatServer() as server:
        root = project(files(server.base_url))
        answer(server)
        server.reply(verdict(True, "It says 4."))
        code, out, err = cli("test", "--junit", tmp_path / "junit.xml")
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[:8] == [
        "sessions/add.md:18: tool-called: passed",
        "sessions/add.md:20: contains: passed",
        "sessions/add.md:21: not-contains: passed",
        "sessions/add.md:22: regex: passed",
        "sessions/add.md:23: sh: passed",
        "sessions/add.md:24: python: passed",
        "sessions/add.md:25: max-tokens: passed",
        "sessions/add.md:26: judge: passed",
    ]
    assert lines[-1] == "8 checks in 1 session: 8 passed, 0 failed"
    # The judge saw the turn, not the checks.
    judged = server.requests[-1]
    assert judged["model"] == "judge-model"
    assert "The sum is 4." in judged["messages"][1]["content"]
    assert all("expect" not in m.get("content", "") for m in server.requests[0]["messages"])
    # Model calls and the judge's are all recorded: the same test replays offline.
    assert len(list((root / ".domarkx" / "replay").rglob("*.json"))) == 4
    code, out, err = cli("test", env={"DOMARKX_LLM": "replay"})
    assert code == 0 and out.splitlines()[-1] == "8 checks in 1 session: 8 passed, 0 failed", err

    suite = ET.parse(tmp_path / "junit.xml").getroot()
    validate_junit(suite)
    assert suite.get("tests") == "8" and suite.get("failures") == "0"


def test_a_failing_judge_and_a_sandbox_check_see_the_turn(project, cli, tmp_path):
    with ChatServer() as server:
        project(files(server.base_url))
        answer(server, saves="5", says="The sum is 4.")
        server.reply(verdict(False, "It never states the sum."))
        code, out, err = cli("test", "--junit", tmp_path / "junit.xml")
    assert code == 1, err
    assert "sessions/add.md:23: sh: FAILED: exit 1" in out
    assert "sessions/add.md:24: python: FAILED: exit 1: AssertionError" in out
    assert "sessions/add.md:26: judge: FAILED: It never states the sum." in out
    assert out.splitlines()[-1] == "8 checks in 1 session: 5 passed, 3 failed"
    assert "`domarkx export " in out

    root = ET.parse(tmp_path / "junit.xml").getroot()
    validate_junit(root)
    failures = root.findall("testsuite/testcase/failure")
    assert [f.get("message") for f in failures][-1] == "It never states the sum."
    assert root.find("testsuite/testcase[@line='26']").get("name") == (
        "line 26: judge: The reply states the sum."
    )


def test_the_results_are_in_the_export(project, cli):
    with ChatServer() as server:
        root = project(files(server.base_url, "- contains: '4'\n- regex: 'five'"))
        answer(server)
        code, out, err = cli("import", "sessions/add.md")
        assert code == 0, err
        code, out, err = cli("run", "add")
    assert code == 0, err
    instance = Store(root / ".domarkx", root).get_instance(out.strip())
    carrying = [m for m in instance.conversation if "checks" in (m.message_metadata or {})]
    assert len(carrying) == 1 and carrying[0] is instance.conversation[-1]
    code, exported, err = cli("export", out.strip())
    assert '"checks": [' in exported and '"detail": "no match for /five/ in the reply"' in exported
    assert (carrying[0].message_metadata or {})["checks"] == [
        {"kind": "contains", "passed": True, "detail": "found '4'"},
        {"kind": "regex", "passed": False, "detail": "no match for /five/ in the reply"},
    ]


def test_samples_ask_again_and_pass_by_their_rate(project, cli):
    expect = "samples: 4\npass-rate: 0.5\nchecks:\n  - contains: 'yes'\n  - sh: test -f sum.txt"
    with ChatServer() as server:
        root = project(
            {
                "sessions/add.md": SESSION.format(checks=expect).replace("tools: [add]\n", ""),
                "domarkx.toml": CONFIG.format(base_url=server.base_url),
            }
        )
        for n in range(4):  # the samples alternate: yes, no, yes, no
            server.reply("yes" if n % 2 == 0 else "no")
        code, out, err = cli("test")
        assert code == 1, out + err
        requests = list(server.requests)
    assert len(requests) == 4
    assert all(r["messages"] == requests[0]["messages"] for r in requests)
    assert "sessions/add.md:20: contains: passed" in out  # 2 of 4
    assert "sessions/add.md:21: sh: FAILED" in out  # no sample wrote sum.txt
    assert "sessions/add.md:16: samples: FAILED: 0 of 4 samples passed every check" in out

    # Each sample has its own record: all four replay offline, in order.
    assert len(list((root / ".domarkx" / "replay").rglob("*.json"))) == 4
    code, again, err = cli("test", env={"DOMARKX_LLM": "replay"})

    def results(text: str) -> list[str]:
        return [line for line in text.splitlines() if "domarkx export" not in line]

    assert results(again) == results(out), err


def test_samples_that_alternate_pass_at_half(project, cli):
    expect = "samples: 4\npass-rate: 0.5\nchecks: [{contains: 'yes'}]"
    with ChatServer() as server:
        project(
            {
                "sessions/add.md": SESSION.format(checks=expect).replace("tools: [add]\n", ""),
                "domarkx.toml": CONFIG.format(base_url=server.base_url),
            }
        )
        for n in range(4):
            server.reply("yes" if n % 2 == 0 else "no")
        code, out, err = cli("test")
    assert code == 0, out + err
    assert out.splitlines() == [
        "sessions/add.md:19: contains: passed",
        "sessions/add.md:16: samples: passed",
        "2 checks in 1 session: 2 passed, 0 failed",
    ]


def test_checks_of_an_earlier_turn_see_the_sandbox_as_that_turn_left_it(project, cli):
    document = """\
    ```yaml session-config
    timeout: 10
    ```

    ## user

    > Write a.txt.

    ```yaml expect
    - sh: test -f a.txt && ! test -f b.txt
    - contains: written
    ```

    ## assistant

    > a.txt written.

    ```bash
    echo a > a.txt
    ```

    ## user

    > Now b.txt.

    ```yaml expect
    - sh: test -f a.txt && test -f b.txt
    - not-contains: written
    ```

    ## assistant

    ```bash
    echo b > b.txt
    ```
    """
    project({"sessions/two.md": document})
    code, out, err = cli("test")
    assert code == 0, out + err
    assert out.splitlines() == [
        "sessions/two.md:10: sh: passed",
        "sessions/two.md:11: contains: passed",
        "sessions/two.md:27: sh: passed",
        "sessions/two.md:28: not-contains: passed",
        "4 checks in 1 session: 4 passed, 0 failed",
    ]


def test_a_mistake_in_an_expect_block_is_one_error_at_import(project, cli):
    project(files("http://127.0.0.1:9/v1", "- contains: a\n- judge: fair\n  endpoint: nowhere"))
    code, out, err = cli("import", "sessions/add.md")
    assert code == 1
    assert err.startswith("domarkx: error: sessions/add.md:19: judge: endpoint 'nowhere'")
    assert "Traceback" not in err
    code, out, err = cli("test")
    assert code == 1 and "could not run: sessions/add.md:19: judge" in out


def test_live_asks_again_and_keeps_no_record_unless_told(project, cli):
    with ChatServer() as server:
        root = project(files(server.base_url, "- contains: 'sum is 4'"))
        replay = root / ".domarkx" / "replay"
        answer(server)
        assert cli("test").code == 0
        recorded = sorted(p.read_text() for p in replay.rglob("*.json"))
        answer(server, says="It is four.")
        code, out, err = cli("test", "--live")
        assert code == 1 and "contains: FAILED" in out, err
        assert sorted(p.read_text() for p in replay.rglob("*.json")) == recorded
        answer(server, says="It is four.")
        code, out, err = cli("test", "--live", "--record")
        assert code == 1, err
        assert sorted(p.read_text() for p in replay.rglob("*.json")) != recorded
    code, out, err = cli("test", env={"DOMARKX_LLM": "replay"})
    assert code == 1 and "contains: FAILED" in out


def pytest_in(root, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pytest ARGS`` in ``root`` as a user runs it: plugins load from their
    entry points (no ``-p``, no autoload switched off), nothing of this suite's options."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=root,
        env=process_env(
            {"DOMARKX_HOME": None, "PYTEST_ADDOPTS": None, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": None}
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_pytest_collects_each_check_of_a_domarkx_init_project_as_an_item(tmp_path):
    # The plugin is the pytest11 entry point of the installed distribution.
    (plugin,) = [e for e in entry_points(group="pytest11") if e.name == "domarkx"]
    assert plugin.value == "domarkx.cli.pytest_plugin"
    root = tmp_path / "project"
    made = subprocess.run(
        [sys.executable, "-m", "domarkx", "init", str(root)],
        env=process_env({"DOMARKX_HOME": None}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    runs = tmp_path / "runs.log"
    (root / "sessions" / "a.md").write_text(
        "## user\n\n> Write a.txt.\n\n```yaml expect\n- sh: test -f a.txt\n"
        "- contains: done\n- contains: nope\n```\n\n## assistant\n\n> done\n\n"
        f"```bash\necho ran >> {runs}\necho a > a.txt\n```\n"
    )
    (root / "sessions" / "broken.md").write_text(
        "## user\n\n> Hi.\n\n```yaml expect\n- sounds-like: hello\n```\n"
    )
    (root / "test_own.py").write_text("def test_own():\n    pass\n")

    done = pytest_in(root, "--domarkx", "sessions/", "-rA", "--junitxml", "junit.xml")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "PASSED sessions/a.md::line 6: sh: test -f a.txt" in out
    assert "PASSED sessions/a.md::line 7: contains: done" in out
    assert "FAILED sessions/a.md::line 8: contains: nope" in out
    assert "sessions/a.md:8: contains: FAILED: 'nope' is not in the reply" in out
    assert "FAILED sessions/broken.md::import" in out
    assert "sessions/broken.md:6: unknown check kind 'sounds-like'" in out
    assert "PASSED test_own.py::test_own" in out  # the project's own test, beside them
    assert "2 failed, 3 passed" in out
    # --junitxml: one test case per check, the failed one with its failure.
    cases = ET.parse(root / "junit.xml").getroot().findall(".//testcase")
    named = {c.get("name"): c for c in cases}
    assert named["line 8: contains: nope"].find("failure") is not None
    assert named["line 6: sh: test -f a.txt"].find("failure") is None
    assert runs.read_text().splitlines() == ["ran"]

    # -k selects checks; the session is not run again (the build's caches answer).
    done = pytest_in(root, "--domarkx", "sessions", "-k", "sh", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 4 deselected" in done.stdout
    assert runs.read_text().splitlines() == ["ran"]
    # The project's pytest configuration names the sessions as well as --domarkx does.
    (root / "pytest.ini").write_text("[pytest]\ndomarkx_paths = sessions\n")
    done = pytest_in(root, "-q")
    assert "2 failed, 3 passed" in done.stdout, done.stdout + done.stderr
    done = pytest_in(root, "-q", "sessions/a.md", "test_own.py")  # as named, no more
    assert "1 failed, 3 passed" in done.stdout, done.stdout + done.stderr
    # Switched off by its entry point's name, the plugin is gone.
    done = pytest_in(root, "-p", "no:domarkx", "--domarkx", "sessions")
    assert done.returncode == 4 and "unrecognized arguments: --domarkx" in done.stderr


def test_a_failed_check_fails_its_sessions_run_task_and_the_build_goes_on(project, cli):
    checked = """\
    ## user

    > Say hi.

    ```yaml expect
    - contains: hello
    - sh: test -f hi.txt
    ```

    ## assistant

    > hi

    ```bash
    echo hi > hi.txt
    ```
    """
    plain = "## assistant\n\n```bash\necho plain\n```\n"
    root = project({"sessions/checked.md": checked, "sessions/plain.md": plain})
    code, out, err = cli("build", "--continue")
    assert code != 0
    assert "sessions/checked.md: 1 check failed: contains: 'hello' is not in the reply" in out + err
    assert "Traceback" not in out + err
    exports = root / ".domarkx" / "exports"
    assert (exports / "plain.md").exists() and not (exports / "checked.md").exists()
    # Built again, nothing new runs and the task fails the same way.
    code, again, err2 = cli("build", "--continue")
    assert code != 0 and "1 check failed" in again + err2
    # Fixed, the session builds; its export shows the checks' results.
    (root / "sessions" / "checked.md").write_text(
        (root / "sessions" / "checked.md").read_text().replace("contains: hello", "contains: hi")
    )
    code, out, err = cli("build")
    assert code == 0, out + err
    exported = (exports / "checked.md").read_text()
    assert '"checks": [' in exported and '"kind": "sh"' in exported


def test_checks_of_the_turn_before_the_models_run_before_the_model_answers(project, cli):
    document = """\
    ```yaml session-config
    timeout: 10
    model: {{provider: openai, name: test-model, endpoint: test, max_turns: 3}}
    ```

    ## user

    > Make a.txt.

    ```yaml expect
    - sh: test -f a.txt && ! test -f b.txt
    ```

    ## assistant

    ```bash
    echo a > a.txt
    ```

    ## user

    > Now make b.txt.

    ```yaml expect
    - sh: test -f b.txt
    ```
    """
    with ChatServer() as server:
        project(
            {
                "sessions/two.md": document.format(),
                "domarkx.toml": CONFIG.format(base_url=server.base_url),
            }
        )
        server.reply("```bash\necho b > b.txt\n```", "Done.")
        code, out, err = cli("test")
    assert code == 0, out + err
    assert out.splitlines() == [
        "sessions/two.md:11: sh: passed",
        "sessions/two.md:25: sh: passed",
        "2 checks in 1 session: 2 passed, 0 failed",
    ]


def test_a_new_judge_prompt_checks_a_cached_session_again(project, cli):
    with ChatServer() as server:
        root = project(files(server.base_url, "- judge: The reply states the sum."))
        answer(server)
        server.reply(verdict(True, "It says 4."))
        code, out, err = cli("build")
        assert code == 0, out + err
        asked = len(server.requests)
        assert asked == 4  # the model three times (tool call, code, answer), the judge once
        code, out, err = cli("build")
        assert code == 0 and len(server.requests) == asked, out + err  # all cached

        config = root / "domarkx.toml"
        config.write_text(config.read_text() + 'judge_prompt = "Grade strictly. Answer JSON."\n')
        server.reply(verdict(False, "Too chatty."))
        code, out, err = cli("build", "--continue")
        requests = list(server.requests)
    assert code != 0
    assert "sessions/add.md: 1 check failed: judge: Too chatty." in out + err
    # Only the judge was asked again (the model's replies replayed), with the new prompt.
    assert len(requests) == asked + 1
    assert requests[-1]["messages"][0]["content"] == "Grade strictly. Answer JSON."


def test_domarkx_test_builds_through_the_task_graph_and_runs_nothing_twice(project, cli, tmp_path):
    runs = tmp_path / "runs.log"  # each run of the document's code adds a line
    document = f"""\
    ## user

    > Write a.txt.

    ```yaml expect
    - sh: test -f a.txt
    - contains: done
    ```

    ## assistant

    > done

    ```bash
    echo ran >> {runs}
    echo a > a.txt
    ```
    """
    root = project({"sessions/a.md": document})
    expected = [
        "sessions/a.md:6: sh: passed",
        "sessions/a.md:7: contains: passed",
        "2 checks in 1 session: 2 passed, 0 failed",
    ]
    code, out, err = cli("test")
    assert (code, out.splitlines()) == (0, expected), err
    assert runs.read_text().splitlines() == ["ran"]
    # Unchanged: the build's run task is up to date, nothing runs, the same report.
    code, out, err = cli("test")
    assert (code, out.splitlines()) == (0, expected), err
    assert runs.read_text().splitlines() == ["ran"]
    # The build that follows takes the same run: it only writes the export.
    code, out, err = cli("build")
    assert code == 0, out + err
    assert runs.read_text().splitlines() == ["ran"]
    assert '"checks": [' in (root / ".domarkx" / "exports" / "a.md").read_text()

    # A check that fails: the new check is run once (from a turn layer, or by running the
    # session again), then the execution cache answers, and the failure is the same.
    source = root / "sessions" / "a.md"
    source.write_text(source.read_text().replace("contains: done", "contains: nope"))
    ran = []
    for _ in range(2):
        code, out, err = cli("test", "--junit", tmp_path / "junit.xml")
        assert code == 1, out + err
        assert (
            out.splitlines()[1] == "sessions/a.md:7: contains: FAILED: 'nope' is not in the reply"
        )
        assert out.splitlines()[2].startswith("  `domarkx export ")
        ran.append(runs.read_text())
        validate_junit(ET.parse(tmp_path / "junit.xml").getroot())
    assert ran[0] == ran[1]
    # A document the build does not know (outside sessions/) runs on its own.
    (root / "notes").mkdir()
    (root / "notes" / "b.md").write_text(source.read_text().replace("nope", "done"))
    code, out, err = cli("test", "notes/b.md")
    assert code == 0, out + err
    assert out.splitlines() == [
        "notes/b.md:6: sh: passed",
        "notes/b.md:7: contains: passed",
        "2 checks in 1 session: 2 passed, 0 failed",
    ]


def test_live_asks_the_model_of_an_up_to_date_session_and_leaves_the_build_its_records(
    project, cli
):
    with ChatServer() as server:
        project(files(server.base_url, "- contains: 'sum is 4'"))
        answer(server)
        assert cli("test").code == 0
        asked = len(server.requests)
        assert cli("test").code == 0 and len(server.requests) == asked  # up to date
        answer(server, says="It is four.")
        code, out, err = cli("test", "--live")
        assert code == 1 and "contains: FAILED" in out, err
        assert len(server.requests) == 2 * asked
        # The live run is no record: the next build replays the recorded replies.
        code, out, err = cli("test", env={"DOMARKX_LLM": "replay"})
    assert code == 0, out + err
    assert out.splitlines()[-1] == "1 check in 1 session: 1 passed, 0 failed"


def test_chat_runs_the_checks_of_the_message_it_answers_in_its_sandbox(project, cli):
    checks = "- sh: test \"$(cat sum.txt)\" = 4\n- contains: '4'\n- regex: 'five'\n- judge: Sum?"
    with ChatServer() as server:
        root = project(files(server.base_url, checks))
        answer(server)
        server.reply(verdict(True, "It states the sum."))
        code, out, err = cli("chat", "sessions/add.md")
        assert code == 0, out + err
        assert server.requests[-1]["model"] == "judge-model"
        # Each result is shown, at its line; the sh check saw the file the turn wrote.
        shown = [line for line in err.splitlines() if "sessions/add.md:" in line]
        assert shown == [
            "domarkx: sessions/add.md:18: sh: passed",
            "domarkx: sessions/add.md:19: contains: passed",
            "domarkx: sessions/add.md:20: regex: FAILED: no match for /five/ in the reply",
            "domarkx: sessions/add.md:21: judge: passed",
        ]
        # ...and recorded in the reply's msg-metadata, as a run records them.
        document = (root / "sessions" / "add.md").read_text()
        assert document.count('"checks": [') == 1
        assert '"detail": "no match for /five/ in the reply"' in document

        # A question typed with -m carries its own expect block.
        server.reply("five")
        question = "Say five.\n\n```yaml expect\n- contains: five\n- not-contains: '4'\n```"
        code, out, err = cli("chat", "sessions/add.md", "-m", question)
    assert code == 0, out + err
    shown = [line for line in err.splitlines() if "sessions/add.md:" in line]
    document = (root / "sessions" / "add.md").read_text().splitlines()
    line = document.index("- contains: five") + 1
    assert shown == [
        f"domarkx: sessions/add.md:{line}: contains: passed",
        f"domarkx: sessions/add.md:{line + 1}: not-contains: passed",
    ]
