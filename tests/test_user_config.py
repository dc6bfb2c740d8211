"""The user's own configuration (``$XDG_CONFIG_HOME/domarkx/config.toml``) grants for every
project, without ``domarkx trust``; a project's untrusted file can narrow it, never widen
or redirect it. Real processes, a real loopback chat-completions server, a real
pseudo-terminal-free run (no one to ask).
"""

from __future__ import annotations

from pathlib import Path

from tests.chat_server import ChatServer
from tests.support import domarkx

BY_ENDPOINT = """\
```yaml session-config
model:
  endpoint: test
  name: test-model
```
"""

SCRIPTED = """\
---
scripted_replies:
  - "Look:\\n```bash\\necho ran-$((40 + 2))\\n```"
  - "Done."
---

```yaml session-config
engine: local_shell
model: {provider: scripted}
```
"""


def user_config(home: Path, text: str) -> dict[str, str | None]:
    """Write the user's config.toml under ``home``; the environment that uses it, untrusted."""
    folder = home / "user-config" / "domarkx"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(text)
    return {
        "XDG_CONFIG_HOME": str(home / "user-config"),
        "DOMARKX_TRUST": None,  # nothing of the project is trusted
        "DOMARKX_TEST_KEY": "sk-users-own",
        "DOMARKX_LLM_RETRIES": "0",
    }


def endpoint(url: str) -> str:
    return f'[endpoints.test]\nbase_url = "{url}"\napi_key_env = "DOMARKX_TEST_KEY"\n'


def test_the_users_configuration_grants_an_endpoint_to_every_project(tmp_path):
    with ChatServer() as server:
        server.reply("From the user's grant.")
        env = user_config(tmp_path, endpoint(server.base_url))
        root = tmp_path / "proj"
        (root / "sessions").mkdir(parents=True)
        (root / "sessions" / "q.md").write_text(BY_ENDPOINT)
        code, _out, err = domarkx(root, "chat", "sessions/q.md", "-m", "hi", env=env, process=True)
        assert code == 0, err
        assert [h.get("authorization") for h in server.headers] == ["Bearer sk-users-own"]
    assert "not trusted" not in err
    assert "From the user's grant." in (root / "sessions" / "q.md").read_text()


def test_an_untrusted_project_cannot_redirect_the_users_endpoint(tmp_path):
    with ChatServer() as users, ChatServer() as projects:
        users.reply("The user's server.")
        projects.reply("The repository's server.")
        env = user_config(tmp_path, endpoint(users.base_url))
        root = tmp_path / "proj"
        (root / "sessions").mkdir(parents=True)
        (root / "domarkx.toml").write_text(endpoint(projects.base_url))
        (root / "sessions" / "q.md").write_text(BY_ENDPOINT)
        code, _out, err = domarkx(root, "chat", "sessions/q.md", "-m", "hi", env=env, process=True)
        assert code == 0, err
        assert projects.requests == [] and projects.headers == []  # nothing, no key
        assert [h.get("authorization") for h in users.headers] == ["Bearer sk-users-own"]
    assert "is not trusted" in err and "domarkx trust" in err


def test_the_users_approve_auto_runs_model_code_in_every_project(tmp_path):
    env = user_config(tmp_path, 'approve = "auto"\n')
    root = tmp_path / "proj"
    (root / "sessions").mkdir(parents=True)
    (root / "sessions" / "q.md").write_text(SCRIPTED)
    code, _out, err = domarkx(root, "chat", "sessions/q.md", "-m", "go", env=env, process=True)
    assert code == 0, err
    assert "ran-42" in (root / "sessions" / "q.md").read_text()


def test_a_projects_file_narrows_the_users_grant_without_trust(tmp_path):
    env = user_config(tmp_path, 'approve = "auto"\n')
    root = tmp_path / "proj"
    (root / "sessions").mkdir(parents=True)
    (root / "domarkx.toml").write_text('approve = "never"\n')
    (root / "sessions" / "q.md").write_text(SCRIPTED)
    code, _out, err = domarkx(root, "chat", "sessions/q.md", "-m", "go", env=env, process=True)
    assert code == 0, err
    text = (root / "sessions" / "q.md").read_text()
    assert "ran-42" not in text and "not run" in text


def test_a_mistake_in_the_users_configuration_names_its_line(tmp_path):
    env = user_config(tmp_path, 'approve = "auto"\n\n[docker]\npid_limit = 5\n')
    root = tmp_path / "proj"
    (root / "sessions").mkdir(parents=True)
    (root / "sessions" / "q.md").write_text(SCRIPTED)
    code, _out, err = domarkx(root, "chat", "sessions/q.md", "-m", "go", env=env, process=True)
    assert code == 1
    first = err.splitlines()[0]
    assert first.startswith("domarkx: error: ") and "config.toml:4:" in first, err
    assert "docker.pid_limit: unknown key" in first
    assert "Traceback" not in err
