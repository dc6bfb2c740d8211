"""Checks (``expect`` blocks): validation, each evaluator, the judge, JUnit XML.

Sandbox checks run in a real local-shell sandbox; the judge talks to the
loopback chat-completions server (tests/chat_server.py) through the real
``openai`` client, and is then replayed offline from its record.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import xmlschema

from domarkx import config as project_config
from domarkx.checks.evaluate import Result, Turn, run_check, run_checks, summarise_samples
from domarkx.checks.judge import Judge, transcript, verdict
from domarkx.checks.junit import SessionReport, to_xml
from domarkx.checks.results import Outcome, outcomes, record, recorded
from domarkx.checks.spec import parse_expect, validate_messages
from domarkx.data.models import CodeBlock, ExecutionConfig, Message, TextBlock
from domarkx.errors import DocumentError, LLMError
from domarkx.execution.local_shell import LocalShellEngine
from domarkx.llm.replay import ReplayCache
from tests.chat_server import ChatServer
from tests.junit_support import JUNIT_XSD, validate_junit


def expect(code: str, line: int = 20, project=None):
    block = CodeBlock(language="yaml", flags=["expect"], code=code)
    return parse_expect(block, file="sessions/s.md", line=line, project=project)


def error_of(code: str, project=None) -> DocumentError:
    with pytest.raises(DocumentError) as caught:
        expect(code, project=project)
    return caught.value


def test_each_check_knows_its_line_in_the_document():
    found = expect(
        "- tool-called: add\n  args: {a: 2, b: 2}\n- contains: '4'\n\n- regex: '\\b4\\b'\n"
    )
    assert [(c.kind, c.line) for c in found.checks] == [
        ("tool-called", 21),
        ("contains", 23),
        ("regex", 25),
    ]
    assert found.checks[0].options == {"args": {"a": 2, "b": 2}}
    assert found.samples == 1 and found.required() == 1


def test_the_mapping_form_sets_samples_and_pass_rate():
    found = expect("samples: 5\npass-rate: 0.8\nchecks:\n  - contains: ok\n  - max-tokens: 9\n")
    assert found.samples == 5 and found.pass_rate == 0.8 and found.required() == 4
    assert [c.line for c in found.checks] == [24, 25]


@pytest.mark.parametrize(
    ("code", "line", "words"),
    [
        ("- contains: a\n- contian: b\n", 22, "unknown check kind 'contian'"),
        ("- regex: '(unclosed'\n", 21, "is not a regular expression"),
        ("- json-schema: {type: 12}\n", 21, "not a valid JSON Schema"),
        ("- max-tokens: many\n", 21, "must be a whole number"),
        ("- max-tokens: true\n", 21, "must be a whole number"),
        ("- contains: a\n  ignore-case: true\n", 21, "unknown option 'ignore-case'"),
        ("- contains: a\n  regex: b\n", 21, "two kinds"),
        ("samples: 0\nchecks: [{contains: a}]\n", 20, "samples must be"),
        ("samples: 2\npass-rate: 1.5\nchecks: [{contains: a}]\n", 20, "pass-rate must be"),
        ("just text\n", 20, "holds a list of checks"),
        ("- contains: [oops\n", 22, "invalid YAML"),
    ],
)
def test_a_bad_check_is_one_error_naming_its_line(code, line, words):
    err = error_of(code)
    assert err.file == "sessions/s.md" and err.line == line
    assert words in err.message and err.hint


def test_a_judge_needs_an_endpoint_the_configuration_lists(tmp_path):
    (tmp_path / "domarkx.toml").write_text(
        '[endpoints.grader]\nbase_url = "http://127.0.0.1:9/v1"\n\n[checks]\njudge_model = "m"\n'
    )
    project = project_config.load(tmp_path)
    err = error_of("- contains: a\n- judge: 'Polite.'\n  endpoint: judge\n", project)
    assert err.line == 22
    assert "endpoint 'judge' is not an endpoint" in err.message and "grader" in err.message
    assert "[endpoints.judge]" in (err.hint or "")
    assert expect("- judge: 'Polite.'\n  endpoint: grader\n", project=project).checks


def test_samples_only_on_the_message_the_model_answers():
    conversation = [
        Message(
            role="user",
            content=[
                CodeBlock(
                    language="yaml", flags=["expect"], code="samples: 2\nchecks: [{contains: a}]"
                )
            ],
        ),
        Message(role="assistant", content=[TextBlock(value="a")]),
    ]
    with pytest.raises(DocumentError, match="only the last user message"):
        validate_messages(conversation, [[7], [9]], file="s.md")
    assert validate_messages(conversation[:1], [[7]], file="s.md")[0].samples == 2


def reply(text: str = "", **metadata) -> Message:
    return Message(
        role="assistant",
        content=[TextBlock(value=text, quoted=True)] if text else [],
        message_metadata=metadata or None,
    )


QUESTION = Message(
    role="user",
    content=[
        TextBlock(value="Add 2 and 2, save the sum to sum.txt.", quoted=True),
        CodeBlock(language="yaml", flags=["expect"], code="- contains: '4'"),
    ],
)


def test_text_tool_schema_and_token_checks_read_the_turn():
    calls = [{"id": "c1", "name": "add", "arguments": json.dumps({"a": 2, "b": 2})}]
    turn = Turn(
        QUESTION,
        [
            reply("Adding.", tool_calls=calls, usage={"prompt_tokens": 5, "completion_tokens": 30}),
            Message(
                role="tool", content=[TextBlock(value="4")], message_metadata={"tool_call_id": "c1"}
            ),
            reply('```json\n{"sum": 4}\n```', usage={"prompt_tokens": 9, "completion_tokens": 12}),
        ],
    )
    checks = expect(
        "- contains: '\"sum\": 4'\n"
        "- not-contains: sorry\n"
        "- regex: '\\b4\\b'\n"
        "- tool-called: add\n  args: {a: 2}\n"
        "- json-schema: {type: object, required: [sum], properties: {sum: {type: integer}}}\n"
        "- max-tokens: 42\n"
    )
    results = run_checks(checks, turn, run_code=None, grader=None)
    assert all(r.passed for r in results), results
    assert results[5].detail == "42 completion tokens (at most 42)"

    failing = expect(
        "- contains: five\n"
        "- not-contains: Adding\n"
        "- regex: '^\\d{3}$'\n"
        "- tool-called: add\n  args: {a: 3}\n"
        "- tool-called: mul\n"
        "- json-schema: {type: object, required: [total]}\n"
        "- max-tokens: 41\n"
    )
    results = run_checks(failing, turn, run_code=None, grader=None)
    assert [r.passed for r in results] == [False] * 7
    assert "'five' is not in the reply" in results[0].detail
    assert "Adding" in results[1].detail
    assert '`add` was called, but with {"a": 2, "b": 2}' in results[3].detail
    assert "`mul` was not called (calls: add)" in results[4].detail
    assert "'total' is a required property" in results[5].detail
    assert results[6].detail == "42 completion tokens (at most 41)"


def test_a_turn_without_a_reply_fails_its_text_checks():
    result = run_check(
        expect("- contains: x").checks[0], Turn(QUESTION, []), run_code=None, grader=None
    )
    assert not result.passed and "no assistant message" in result.detail


def test_sandbox_checks_see_the_files_and_state_the_turn_left(tmp_path):
    engine = LocalShellEngine(ExecutionConfig(), tmp_path / "work")
    engine.start()
    try:
        engine.run("bash", "echo 4 > sum.txt", 10)
        engine.run("python", "total = 4", 10)
        checks = expect(
            '- sh: test "$(cat sum.txt)" = 4\n'
            "- python: assert open('sum.txt').read().strip() == '4' and total == 4\n"
            "- sh: test -f missing.txt\n"
            "- python: assert total == 5, 'total is not 5'\n"
        )
        results = run_checks(
            checks,
            Turn(QUESTION, [reply("Saved.")]),
            run_code=lambda language, code: engine.run(language, code, 10),
            grader=None,
        )
    finally:
        engine.stop()
    assert [r.passed for r in results] == [True, True, False, False]
    assert results[2].detail == "exit 1"
    assert "AssertionError: total is not 5" in results[3].detail


JUDGE_CONFIG = """\
[endpoints.judge]
base_url = "{base_url}"

[checks]
judge_model = "grader-1"
"""


def test_the_judge_grades_through_the_server_and_replays_offline(tmp_path):
    turn = Turn(QUESTION, [reply("The sum is 4; I saved it to sum.txt.")])
    with ChatServer() as server:
        (tmp_path / "domarkx.toml").write_text(JUDGE_CONFIG.format(base_url=server.base_url))
        project = project_config.load(tmp_path)
        checks = expect(
            "- judge: The reply states the sum.\n  endpoint: judge\n"
            "- judge: The reply is in French.\n  endpoint: judge\n",
            project=project,
        )
        server.reply(
            '{"pass": true, "reason": "It says the sum is 4."}',
            '```json\n{"pass": false, "reason": "It is in English."}\n```',
        )
        judge = Judge(project, ReplayCache(tmp_path / "replay", mode="auto"), session="s.md")
        results = run_checks(checks, turn, run_code=None, grader=judge)
    assert results == [
        Result("judge", True, "It says the sum is 4."),
        Result("judge", False, "It is in English."),
    ]
    sent = server.requests[0]
    assert sent["model"] == "grader-1" and sent["temperature"] == 0
    assert '"pass"' in sent["messages"][0]["content"]
    rubric = sent["messages"][1]["content"]
    assert rubric.startswith("Rubric:\nThe reply states the sum.")
    assert "I saved it to sum.txt" in rubric and "contains" not in rubric  # no expect block
    assert len(list((tmp_path / "replay").rglob("*.json"))) == 2

    # The server is gone: replay mode grades the same way from the records.
    offline = Judge(project, ReplayCache(tmp_path / "replay", mode="replay"), session="s.md")
    assert run_checks(checks, turn, run_code=None, grader=offline) == results
    # A turn never graded is a replay miss: an error, not a guess.
    other = Turn(QUESTION, [reply("Five.")])
    with pytest.raises(LLMError, match="no recorded reply"):
        run_checks(checks, other, run_code=None, grader=offline)


def test_the_judge_prompt_is_the_users_to_override(tmp_path):
    with ChatServer() as server:
        (tmp_path / "domarkx.toml").write_text(
            JUDGE_CONFIG.format(base_url=server.base_url)
            + 'judge_endpoint = "judge"\n'
            + 'judge_prompt = "Grade strictly. Answer {\\"pass\\": bool, \\"reason\\": str}."\n'
        )
        project = project_config.load(tmp_path)
        server.reply("I think it passes.")
        judge = Judge(project, ReplayCache(tmp_path / "replay", mode="auto"), session="s.md")
        check = expect("- judge: Polite.", project=project).checks[0]
        result = run_check(check, Turn(QUESTION, [reply("Hi")]), run_code=None, grader=judge)
    assert server.requests[0]["messages"][0]["content"].startswith("Grade strictly.")
    assert not result.passed and "did not answer with {pass, reason}" in result.detail


def test_verdicts_are_read_without_luck():
    assert verdict('{"pass": true, "reason": "ok"}') == (True, "ok")
    assert verdict('Sure! {"reason": "bad", "pass": false} done') == (False, "bad")
    assert verdict('{"pass": "yes"}')[0] is False
    assert "[assistant]" in transcript(Turn(QUESTION, [reply("x")]))


def test_results_go_into_the_last_assistant_message_and_come_back():
    conversation = [QUESTION, reply("one"), reply("two"), Message(role="user", content=[])]
    results = [Result("contains", True, "found '4'")]
    assert record(conversation, 0, results) == 2
    assert conversation[2].message_metadata == {
        "checks": [{"kind": "contains", "passed": True, "detail": "found '4'"}]
    }
    assert recorded(conversation, 0) == results
    expects = {0: expect("- contains: '4'\n- regex: x\n")}
    found = outcomes("sessions/s.md", expects, conversation)
    assert [o.result.passed for o in found] == [True, False]
    assert "not run" in found[1].result.detail and found[1].where == "sessions/s.md:22"


def test_samples_pass_when_enough_of_them_pass_every_check():
    checks = expect("samples: 4\npass-rate: 0.5\nchecks: [{contains: a}, {contains: b}]")
    ok, bad = Result("contains", True, ""), Result("contains", False, "no")
    merged = summarise_samples(checks, [[ok, ok], [ok, bad], [bad, ok], [ok, ok]])
    assert [r.passed for r in merged] == [True, True, True]
    assert merged[0].detail.startswith("passed in 3 of 4 samples")
    assert merged[2].kind == "samples" and merged[2].detail.startswith("2 of 4 samples")
    merged = summarise_samples(checks, [[ok, bad], [bad, ok], [ok, bad], [ok, ok]])
    assert [r.passed for r in merged] == [True, True, False]


def test_junit_xml_has_the_documented_shape():
    passed = Outcome("sessions/a.md", 12, "contains: 4", Result("contains", True, "found"))
    failed = Outcome("sessions/a.md", 13, "regex: x", Result("regex", False, "no match for /x/"))
    reports = [
        SessionReport(
            "sessions/a.md", [passed, failed], seconds=1.5, timestamp="2026-01-01T00:00:00"
        ),
        SessionReport(
            "sessions/b.md", error="sessions/b.md:3: bad", timestamp="2026-01-01T00:00:00"
        ),
    ]
    root = ET.fromstring(ET.tostring(to_xml(reports)))
    validate_junit(root)
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    case = root.find("testsuite/testcase[@line='13']")
    assert case is not None and case.get("classname") == "sessions.a"
    assert case.get("name") == "line 13: regex: x"
    assert case.find("failure").get("message") == "no match for /x/"


@pytest.mark.parametrize(
    ("path", "attribute", "value"),
    [
        ("testsuite", "timestamp", None),  # a suite must say when it ran
        ("testsuite", "time", "1.5s"),  # seconds are a number
        ("testsuite/testcase", "classname", None),
        ("testsuite/testcase", "line", "0"),
        (".", "failures", "-1"),
    ],
)
def test_the_junit_xsd_rejects_what_ci_reporters_cannot_read(path, attribute, value):
    """The schema the written XML is validated against says no to a broken report."""
    outcome = Outcome("sessions/a.md", 12, "contains: 4", Result("contains", True, "found"))
    report = SessionReport("sessions/a.md", [outcome], timestamp="2026-01-01T00:00:00")
    root = ET.fromstring(ET.tostring(to_xml([report])))
    schema = xmlschema.XMLSchema(JUNIT_XSD)
    schema.validate(root)
    element = root.find(path)
    assert element is not None
    if value is None:
        del element.attrib[attribute]
    else:
        element.set(attribute, value)
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema.validate(root)
