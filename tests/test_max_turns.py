"""``model.max_turns`` is bounded by the configuration (tools-chat-trust spec, section 3.2).

A document asking for more model calls per run than ``[limits] max_turns``
(default 50) gets one error naming its session-config line and the setting to
raise, before anything runs and before any request: in ``domarkx run``, in
``domarkx chat``, in a build and in the editor. A raised ceiling is a grant
(it takes effect once the configuration is trusted); a lower one always holds.
Real processes against a real loopback chat-completions server.
"""

from __future__ import annotations

from pathlib import Path

from tests.chat_server import ChatServer
from tests.support import doit, domarkx, new_project

SESSION = """\
```yaml session-config
engine: local_shell
model:
  name: test-model
  base_url: {base_url}
  max_turns: {max_turns}
```

## user

hi
"""

UNTRUSTED = {"DOMARKX_TRUST": None, "DOMARKX_LLM_RETRIES": "0"}
CEILING_ERROR = "model.max_turns = 1000000 is past the project's ceiling of 50 model calls"


def one_error(err: str, line: str) -> None:
    """``err`` is one error at ``line`` (``file:N: ...``), its hint naming the setting
    (after the note of an untrusted configuration, if any)."""
    assert "Traceback" not in err, err
    lines = [x for x in err.strip().splitlines() if not x.startswith("domarkx: note: ")]
    assert sum(x.startswith("domarkx: error: ") for x in lines) == 1, err
    assert lines[0].startswith(f"domarkx: error: {line}: "), err
    assert CEILING_ERROR in lines[0], err
    assert "[limits]" in err and "max_turns = 1000000" in err, err


def test_a_million_turns_is_one_error_in_run_chat_and_build_and_nothing_is_sent(tmp_path: Path):
    with ChatServer() as server:
        server.reply(*["Asked anyway."] * 5)
        root = new_project(
            tmp_path / "p",
            {"sessions/q.md": SESSION.format(base_url=server.base_url, max_turns=1000000)},
        )
        before = (root / "sessions" / "q.md").read_bytes()

        code, _out, err = domarkx(root, "run", "sessions/q.md", env=UNTRUSTED, process=True)
        assert code == 1
        one_error(err, "sessions/q.md:6")

        code, _out, err = domarkx(root, "chat", "sessions/q.md", "-m", "hi", process=True)
        assert code == 1
        one_error(err, "sessions/q.md:6")

        built = doit(root, env=UNTRUSTED, process=True)
        assert built.code == 1
        assert f"FAILED run:q: sessions/q.md:6: {CEILING_ERROR}" in built.out + built.err
        assert "Traceback" not in built.out + built.err

        assert server.requests == []
    assert (root / "sessions" / "q.md").read_bytes() == before  # chat appended nothing
    assert not (root / ".domarkx" / "exports" / "q.md").exists()


def test_a_raised_ceiling_is_a_grant_of_a_trusted_configuration(tmp_path: Path):
    with ChatServer() as server:
        server.reply("Answered.")
        root = new_project(
            tmp_path / "p",
            {
                "sessions/q.md": SESSION.format(base_url=server.base_url, max_turns=1000000),
                "domarkx.toml": "[limits]\nmax_turns = 1000000\n",
            },
        )
        code, _out, err = domarkx(root, "run", "sessions/q.md", env=UNTRUSTED, process=True)
        assert code == 1
        one_error(err, "sessions/q.md:6")
        assert "is not trusted" in err and "limits max_turns 1000000" in err
        assert "run `domarkx trust`" in err
        assert server.requests == []

        trusted = {**UNTRUSTED, "DOMARKX_TRUST": "1"}
        code, _out, err = domarkx(root, "run", "sessions/q.md", env=trusted, process=True)
        assert code == 0, err
        assert len(server.requests) == 1  # the reply had no code: one call, as ever


def test_a_lower_ceiling_holds_without_trust(tmp_path: Path):
    with ChatServer() as server:
        root = new_project(
            tmp_path / "p",
            {
                "sessions/q.md": SESSION.format(base_url=server.base_url, max_turns=5),
                "domarkx.toml": "[limits]\nmax_turns = 4\n",
            },
        )
        code, _out, err = domarkx(root, "run", "sessions/q.md", env=UNTRUSTED, process=True)
        assert server.requests == []
    assert code == 1
    assert err.startswith("domarkx: error: sessions/q.md:6: model.max_turns = 5 is past the ")
    assert "ceiling of 4 model calls" in err and "domarkx trust" not in err


def test_a_bad_ceiling_is_an_error_at_its_line(tmp_path: Path):
    root = new_project(
        tmp_path / "p",
        {
            "sessions/q.md": SESSION.format(base_url="http://127.0.0.1:9/v1", max_turns=2),
            "domarkx.toml": "# limits\n[limits]\nmax_turns = 0\n",
        },
    )
    code, _out, err = domarkx(root, "run", "sessions/q.md", env=UNTRUSTED, process=True)
    assert code == 1
    assert "domarkx.toml:3: limits.max_turns: Input should be greater than or equal to 1" in err
    assert "Traceback" not in err
