"""The project's configuration: domarkx.toml or [tool.domarkx], checked, read once per command."""

from __future__ import annotations

import textwrap

import pytest

from domarkx import config
from domarkx.cli.main import main
from domarkx.config import ConfigError

SESSION = """\
```bash
echo hi
```
"""


def load_text(tmp_path, text: str, name: str = "domarkx.toml") -> config.ProjectConfig:
    (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return config.load(tmp_path)


def error_of(tmp_path, text: str, name: str = "domarkx.toml") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text, name)
    return caught.value


def test_no_configuration_means_the_defaults(tmp_path):
    found = config.load(tmp_path)
    assert found.approve == "ask" and found.endpoints == {} and found.docker.networks == []
    assert found.docker.pids_limit == config.DEFAULT_PIDS_LIMIT
    assert found.describe() == str(tmp_path / "domarkx.toml")


def test_every_key_is_read(tmp_path):
    found = load_text(
        tmp_path,
        """\
        approve = "auto"

        [endpoints.deepseek]
        base_url = "https://api.deepseek.com/v1"
        api_key_env = "DEEPSEEK_API_KEY"

        [docker]
        networks = ["bridge"]
        pids_limit = 64
        memory = "256M"
        cap_add = ["CHOWN"]
        """,
    )
    assert found.approve == "auto"
    assert found.endpoints["deepseek"].api_key_env == "DEEPSEEK_API_KEY"
    assert found.docker.networks == ["bridge"] and found.docker.pids_limit == 64
    assert found.docker.memory == "256m" and found.docker.cap_add == ["CHOWN"]


def test_an_unknown_key_names_its_file_and_line(tmp_path):
    err = error_of(tmp_path, 'approve = "ask"\n\n[docker]\nnetworks = []\npid_limit = 5\n')
    assert str(err).startswith(f"{tmp_path / 'domarkx.toml'}:5: docker.pid_limit: unknown key")


def test_a_wrong_type_names_its_line(tmp_path):
    err = error_of(tmp_path, '# grants\n\napprove = "yes"\n')
    assert err.line == 3 and "approve" in err.message and "'ask'" in err.message


def test_a_missing_key_names_its_table(tmp_path):
    err = error_of(tmp_path, '[endpoints.x]\napi_key_env = "K"\n')
    assert err.line == 1 and "endpoints.x.base_url" in err.message


def test_a_dotted_key_and_a_nested_table_name_their_lines(tmp_path):
    err = error_of(tmp_path, 'approve = "ask"\ndocker.pids_limit = "many"\n')
    assert err.line == 2
    err = error_of(
        tmp_path,
        '[endpoints.a]\nbase_url = "https://a/v1"\n\n[endpoints.b]\nbase_url = "ftp://b"\n',
    )
    assert err.line == 5 and "endpoints.b.base_url" in err.message


def test_pyproject_tool_domarkx_is_read_with_its_lines(tmp_path):
    text = '[project]\nname = "x"\n\n[tool.domarkx]\napprove = "auto"\n\n[tool.domarkx.docker]\nmemory = "lots"\n'
    err = error_of(tmp_path, text, "pyproject.toml")
    assert err.file == str(tmp_path / "pyproject.toml") and err.line == 8
    assert load_text(tmp_path, '[project]\nname = "x"\n', "pyproject.toml").approve == "ask"


def test_domarkx_toml_comes_before_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.domarkx]\napprove = "never"\n')
    assert load_text(tmp_path, 'approve = "auto"\n').approve == "auto"


def test_a_bad_capability_names_its_line(tmp_path):
    err = error_of(tmp_path, '[docker]\ncap_add = ["CHOWN", "all of them"]\n')
    assert err.line == 2 and "capability" in err.message


def test_broken_toml_names_its_line(tmp_path):
    err = error_of(tmp_path, 'approve = "auto"\n[docker\n')
    assert err.line == 2 and "not valid TOML" in err.message


def test_read_once_and_again_only_when_changed(tmp_path):
    first = load_text(tmp_path, 'approve = "auto"\n')
    assert config.load(tmp_path) is first
    (tmp_path / "domarkx.toml").write_text('approve = "never"   \n')
    assert config.load(tmp_path).approve == "never"


def test_a_command_reports_a_bad_configuration_once_with_exit_1(project, capsys):
    project({"sessions/a.md": SESSION, "domarkx.toml": 'approve = "auto"\nnetwork = "host"\n'})
    assert main(["import", "sessions/a.md"]) == 0
    code = main(["run", "--yes", "a"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("error:") == 1 and "domarkx.toml:2: network: unknown key" in err
    assert "Traceback" not in err


def test_init_writes_a_commented_configuration_that_loads(tmp_path, capsys):
    assert main(["init", str(tmp_path / "new")]) == 0
    written = (tmp_path / "new" / "domarkx.toml").read_text()
    assert written.count("\n#") > 10  # commented
    found = config.load(tmp_path / "new")
    assert found.approve == "ask" and found.docker.networks == []
