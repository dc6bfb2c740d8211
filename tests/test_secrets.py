"""A session document may ask for a key; only the project's configuration grants it.

A real chat-completions server on 127.0.0.1 logs every request's headers: a key
the configuration does not grant to that server must never reach it, and the
refusal names the session-config line and what to add.
"""

from __future__ import annotations

import pytest

from domarkx.cli.main import main
from tests.chat_server import ChatServer

SECRET = "sk-do-not-leak-0123456789"

SESSION = """\
```yaml session-config
model:
  provider: openai
  name: test-model
{model}
```

## user

> Hello?
"""

ASKS_FOR_KEY = "  base_url: {base_url}\n  api_key_env: DOMARKX_SECRET"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def leaked(server: ChatServer) -> bool:
    return any(SECRET in value for headers in server.headers for value in headers.values())


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOMARKX_SECRET", SECRET)
    monkeypatch.setenv("DOMARKX_LLM_RETRIES", "0")


def test_a_key_the_configuration_does_not_grant_is_never_sent(project, capsys):
    with ChatServer() as server:
        url = server.base_url
        server.reply("Hi!")
        project(
            {"sessions/ask.md": SESSION.format(model=ASKS_FOR_KEY.format(base_url=server.base_url))}
        )
        assert run(capsys, "import", "sessions/ask.md")[0] == 0
        code, _, err = run(capsys, "run", "ask")

    assert code == 1
    assert not leaked(server)
    assert server.requests == []  # nothing at all was sent
    # The line of `api_key_env` in session-config, and the configuration to add.
    assert "sessions/ask.md:6: " in err
    assert "DOMARKX_SECRET" in err and "[endpoints.NAME]" in err
    assert f'base_url = "{url}"' in err and "domarkx.toml" in err
    assert "Traceback" not in err


def test_a_key_granted_to_another_server_is_not_sent_to_this_one(project, capsys):
    with ChatServer() as server:
        server.reply("Hi!")
        project(
            {
                "sessions/ask.md": SESSION.format(
                    model=ASKS_FOR_KEY.format(base_url=server.base_url)
                ),
                "domarkx.toml": '[endpoints.real]\nbase_url = "https://api.example.com/v1"\n'
                'api_key_env = "DOMARKX_SECRET"\n',
            }
        )
        run(capsys, "import", "sessions/ask.md")
        code, _, err = run(capsys, "run", "ask")

    assert code == 1 and not leaked(server) and server.requests == []
    assert "sessions/ask.md:6: " in err


def test_a_granted_key_goes_to_its_server(project, capsys):
    with ChatServer() as server:
        server.reply("Hi!")
        project(
            {
                "sessions/ask.md": SESSION.format(
                    model=ASKS_FOR_KEY.format(base_url=server.base_url + "/")
                ),
                "domarkx.toml": f'[endpoints.test]\nbase_url = "{server.base_url}"\n'
                'api_key_env = "DOMARKX_SECRET"\n',
            }
        )
        run(capsys, "import", "sessions/ask.md")
        code, _, err = run(capsys, "run", "ask")

    assert code == 0, err
    assert server.headers[0]["authorization"] == f"Bearer {SECRET}"


def test_a_document_may_name_a_configured_endpoint(project, capsys):
    with ChatServer() as server:
        server.reply("Hi!")
        project(
            {
                "sessions/ask.md": SESSION.format(model="  endpoint: test"),
                "pyproject.toml": '[project]\nname = "x"\n\n[tool.domarkx.endpoints.test]\n'
                f'base_url = "{server.base_url}"\napi_key_env = "DOMARKX_SECRET"\n',
            }
        )
        run(capsys, "import", "sessions/ask.md")
        code, _, err = run(capsys, "run", "ask")

    assert code == 0, err
    assert server.headers[0]["authorization"] == f"Bearer {SECRET}"
    assert server.requests[0]["model"] == "test-model"
    assert "endpoint" not in server.requests[0]  # a name of ours, not a model parameter


def test_an_unknown_endpoint_names_its_line_and_sends_nothing(project, capsys):
    with ChatServer() as server:
        project({"sessions/ask.md": SESSION.format(model="  endpoint: nowhere")})
        run(capsys, "import", "sessions/ask.md")
        code, _, err = run(capsys, "run", "ask")

    assert code == 1 and server.requests == []
    assert "sessions/ask.md:5: " in err and "'nowhere'" in err and "[endpoints.nowhere]" in err


def test_naming_the_endpoint_keeps_the_recorded_replies(project, capsys, monkeypatch):
    """Moving a session from base_url + api_key_env to `endpoint:` replays the same records."""
    with ChatServer() as server:
        base_url = server.base_url
        server.reply("Recorded.")
        root = project(
            {
                "sessions/ask.md": SESSION.format(model=ASKS_FOR_KEY.format(base_url=base_url)),
                "domarkx.toml": f'[endpoints.test]\nbase_url = "{base_url}"\n'
                'api_key_env = "DOMARKX_SECRET"\n',
            }
        )
        run(capsys, "import", "sessions/ask.md")
        assert run(capsys, "run", "ask")[0] == 0

    (root / "sessions" / "ask.md").write_text(SESSION.format(model="  endpoint: test"))
    monkeypatch.setenv("DOMARKX_LLM", "replay")
    run(capsys, "import", "sessions/ask.md")
    code, out, err = run(capsys, "run", "ask")
    assert code == 0, err
    code, exported, _ = run(capsys, "export", out.strip())
    assert "> Recorded." in exported


def test_a_refused_key_still_replays_a_recorded_reply(project, capsys, monkeypatch):
    """Nothing would be sent, so a committed record builds offline without the grant."""
    with ChatServer() as server:
        base_url = server.base_url
        server.reply("Recorded.")
        root = project(
            {
                "sessions/ask.md": SESSION.format(model=ASKS_FOR_KEY.format(base_url=base_url)),
                "domarkx.toml": f'[endpoints.test]\nbase_url = "{base_url}"\n'
                'api_key_env = "DOMARKX_SECRET"\n',
            }
        )
        run(capsys, "import", "sessions/ask.md")
        assert run(capsys, "run", "ask")[0] == 0

    (root / "domarkx.toml").unlink()
    monkeypatch.setenv("DOMARKX_LLM", "replay")
    code, _, err = run(capsys, "run", "ask")
    assert code == 0, err


def test_the_openai_packages_environment_headers_go_only_where_a_key_goes(
    project, capsys, monkeypatch
):
    """OPENAI_ORG_ID, OPENAI_PROJECT_ID and OPENAI_CUSTOM_HEADERS stay home without a grant."""
    monkeypatch.setenv("OPENAI_ORG_ID", "org-do-not-leak")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-do-not-leak")
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", "X-Proxy-Auth: do-not-leak")
    with ChatServer() as server:
        server.reply("Hi!", "Hi again!")
        root = project({"sessions/ask.md": SESSION.format(model=f"  base_url: {server.base_url}")})
        run(capsys, "import", "sessions/ask.md")
        code, _, err = run(capsys, "run", "ask")
        assert code == 0, err
        # Granted, with its key: the user's own settings for that server go along.
        (root / "sessions/ask.md").write_text(
            SESSION.format(model=ASKS_FOR_KEY.format(base_url=server.base_url))
        )
        (root / "domarkx.toml").write_text(
            f'[endpoints.t]\nbase_url = "{server.base_url}"\napi_key_env = "DOMARKX_SECRET"\n'
        )
        run(capsys, "import", "sessions/ask.md")
        monkeypatch.setenv("DOMARKX_LLM", "record")  # ask the server, not the first record
        code, _, err = run(capsys, "run", "ask")
        assert code == 0, err

    anonymous, granted = server.headers
    assert not any("do-not-leak" in value for value in anonymous.values()), anonymous
    assert granted["openai-organization"] == "org-do-not-leak"
    assert granted["x-proxy-auth"] == "do-not-leak"
