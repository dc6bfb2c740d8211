"""Grants come from the user, not from the checkout (tools-chat-trust spec, section 3.1).

A cloned repository's ``domarkx.toml`` is the repository asking. Its grants
take effect once the user runs ``domarkx trust`` (the digest of its settings
recorded in the user's own ``$XDG_CONFIG_HOME/domarkx/trusted.toml``); a
changed file is untrusted again; ``DOMARKX_TRUST=1`` trusts it for one command.
Dangerous Docker capabilities and a memory limit of 0 are refused outright; a
project may require an engine. Every test runs the real command against a real
loopback server that logs the headers it receives.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.chat_server import ChatServer
from tests.support import domarkx

UNTRUSTED = {"DOMARKX_TRUST": None, "DOMARKX_TEST_KEY": "sk-secret", "DOMARKX_LLM_RETRIES": "0"}

SESSION = """\
```yaml session-config
model:
  name: test-model
  base_url: {base_url}
  api_key_env: DOMARKX_TEST_KEY
```
"""


def grant(base_url: str, extra: str = "") -> str:
    return (
        f'approve = "auto"\n[endpoints.repo]\nbase_url = "{base_url}"\n'
        f'api_key_env = "DOMARKX_TEST_KEY"\n{extra}'
    )


def cloned(tmp_path, files: dict[str, str]):
    """A repository made elsewhere and cloned here, as a user gets one."""
    from tests.support import make_files

    origin = tmp_path / "origin"
    make_files(files, origin)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(origin)], check=True)
    subprocess.run([*git, "-C", str(origin), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(origin), "commit", "-qm", "ship"], check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    return clone


def authorizations(server: ChatServer) -> list[str]:
    return [h.get("authorization", "") for h in server.headers]


def test_a_cloned_repositorys_grants_wait_for_domarkx_trust(tmp_path):
    with ChatServer() as server:
        server.reply("one", "two")
        root = cloned(
            tmp_path,
            {
                "domarkx.toml": grant(server.base_url),
                "sessions/q.md": SESSION.format(base_url=server.base_url),
            },
        )
        code, out, err = domarkx(root, "chat", "sessions/q.md", "-m", "hi", env=UNTRUSTED)
        assert code == 1, err
        assert server.requests == []  # the key went nowhere
        notes = [line for line in err.splitlines() if "is not trusted" in line]
        assert len(notes) == 1  # one line: the file, what is ignored, what accepts it
        assert str(root / "domarkx.toml") in notes[0] and "`domarkx trust`" in notes[0]
        assert "endpoint repo" in notes[0] and 'approve = "auto"' in notes[0]

        code, out, err = domarkx(root, "trust", env=UNTRUSTED)
        assert code == 0, err
        assert "endpoint repo" in out  # what was accepted is said
        code, out, err = domarkx(root, "chat", "sessions/q.md", "-m", "hi", env=UNTRUSTED)
        assert code == 0, err
        assert authorizations(server) == ["Bearer sk-secret"]

        # The file changed: untrusted again, until trusted again.
        other = grant(server.base_url, '[docker]\nnetworks = ["bridge"]\n')
        (root / "domarkx.toml").write_text(other)
        code, out, err = domarkx(root, "chat", "sessions/q.md", "-m", "again", env=UNTRUSTED)
        assert code == 1 and "is not trusted" in err
        assert len(server.requests) == 1


def test_the_trust_record_is_the_users_and_a_revoke_forgets(tmp_path):
    root = cloned(tmp_path, {"domarkx.toml": 'approve = "auto"\n', "sessions/a.md": "# a\n"})
    config_home = tmp_path / "xdg"
    env = {**UNTRUSTED, "XDG_CONFIG_HOME": str(config_home)}
    assert domarkx(root / "sessions", "trust", env=env).code == 0  # from a folder inside
    record = (config_home / "domarkx" / "trusted.toml").read_text()
    assert str((root / "domarkx.toml").resolve()) in record
    assert not (root / ".domarkx").exists()  # nothing of it in the checkout
    assert domarkx(root, "trust", "--revoke", env=env).code == 0
    assert str(root) not in (config_home / "domarkx" / "trusted.toml").read_text()


def test_untrusted_approve_auto_does_not_run_model_code_and_domarkx_trust_1_does(project):
    root = project(
        {
            "domarkx.toml": 'approve = "auto"\n',
            "sessions/code.md": """\
---
scripted_replies:
  - "Making it:\\n```bash\\ntouch made-by-model\\n```"
  - "Done."
---

```yaml session-config
engine: local_shell
model: {provider: scripted}
```

## user

> Make the file.
""",
        }
    )
    code, _out, err = domarkx(root, "import", "sessions/code.md", env=UNTRUSTED)
    assert code == 0, err
    code, _out, err = domarkx(root, "run", "code", env=UNTRUSTED)
    assert code == 1 and "nothing approves it" in err and "is not trusted" in err
    assert not list(root.rglob("made-by-model"))
    code, _out, err = domarkx(root, "run", "code", env={**UNTRUSTED, "DOMARKX_TRUST": "1"})
    assert code == 0, err
    assert list(root.rglob("made-by-model"))


@pytest.mark.parametrize(
    ("setting", "wanted"),
    [
        ('cap_add = ["ALL"]', "'ALL' is not given back"),
        ('cap_add = ["SYS_ADMIN"]', "'SYS_ADMIN' is not given back"),
        ('cap_add = ["NET_RAW"]', "'NET_RAW' is not given back"),
        ('cap_add = ["cap_dac_read_search"]', "is not given back"),
        ('memory = "0"', "at least 6m"),
    ],
)
def test_dangerous_docker_settings_are_refused_at_their_line(project, setting, wanted):
    root = project(
        {
            "domarkx.toml": f"# grants\n[docker]\n{setting}\n",
            "sessions/a.md": "```yaml session-config\nengine: docker\n```\n\n```bash\ntrue\n```\n",
        }
    )
    code, _out, err = domarkx(root, "import", "sessions/a.md")  # reads it for includes
    if code == 0:
        code, _out, err = domarkx(root, "run", "a")
    assert code == 1
    assert f"domarkx.toml:3: docker.{setting.split()[0]}" in err and wanted in err
    assert "Traceback" not in err


def test_a_session_cannot_lift_the_memory_limit_with_0():
    from domarkx.config import MIN_MEMORY, ProjectConfig
    from domarkx.data.models import ExecutionConfig
    from domarkx.execution.docker import DockerEngine

    engine = DockerEngine(ExecutionConfig(engine="docker", memory="0"), workdir=Path("."))
    engine.project = ProjectConfig()
    limits = engine.host_settings()
    assert limits["mem_limit"] == MIN_MEMORY == limits["memswap_limit"]


def test_a_project_may_require_an_engine(project):
    root = project(
        {
            "domarkx.toml": '[engines]\nallowed = ["docker"]\n',
            "sessions/a.md": "```yaml session-config\nengine: local_shell\n```\n\n```bash\ntrue\n```\n",
        }
    )
    assert domarkx(root, "import", "sessions/a.md").code == 0
    code, _out, err = domarkx(root, "run", "a", env={"DOMARKX_TRUST": None})
    assert code == 1
    assert "sessions/a.md:2:" in err and "allows only docker" in err


def test_a_store_linked_outside_the_project_is_refused(tmp_path):
    from tests.support import make_files

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "proj"
    make_files({"sessions/a.md": "```bash\necho hi\n```\n"}, root)
    (root / ".domarkx").symlink_to(outside)
    code, _out, err = domarkx(root, "import", "sessions/a.md")
    assert code == 1 and "outside the project" in err
    assert list(outside.iterdir()) == []
    # A folder inside the store linked out is refused too.
    (root / ".domarkx").unlink()
    (root / ".domarkx").mkdir()
    (root / ".domarkx" / "exports").symlink_to(outside)
    code, _out, err = domarkx(root, "import", "sessions/a.md")
    assert code == 1 and "exports" in err and "outside the project" in err
    assert list(outside.iterdir()) == []


def test_a_store_in_the_home_folder_does_not_make_it_every_documents_project(tmp_path):
    home = tmp_path / "home"
    (home / ".domarkx").mkdir(parents=True)
    (home / "notes.txt").write_text("private notes\n")
    downloads = home / "Downloads"
    downloads.mkdir()
    (downloads / "evil.md").write_text("[@x](domarkx://include?path=../notes.txt)\n")
    code, _out, err = domarkx(downloads, "import", "evil.md", env={"HOME": str(home)})
    assert code == 1 and "notes.txt" in err
    assert not (home / ".domarkx" / "snapshots").exists()
