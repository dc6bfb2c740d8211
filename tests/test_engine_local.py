"""Engines against the real thing: the contract every engine keeps, then the local shell's own.

The contract tests run over each engine (as jupyter-cache runs its execution
tests over every executor); the Docker runs carry the ``docker`` marker and
use the images bench/docker-image.sh builds (see tests/dockerutil.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from domarkx.data.models import ExecutionConfig
from domarkx.errors import EngineError
from domarkx.execution.engine import Engine, engine_class
from domarkx.execution.local_shell import LocalShellEngine
from tests.dockerutil import (
    BUSYBOX_IMAGE,
    PYTHON_IMAGE,
    processes_running,
    require_image,
    secs,
    started,
)

FIVE_MB = 5_000_000


def make_engine(kind: str, tmp_path: Path, **config) -> Engine:
    if kind == "docker":
        config.setdefault("image", require_image(BUSYBOX_IMAGE))
    elif kind == "docker-python":
        kind, config["image"] = "docker", require_image(PYTHON_IMAGE)
    cls = engine_class(kind)
    return cls(ExecutionConfig(engine=kind, **config), tmp_path / "work")


@pytest.fixture(params=["local_shell", pytest.param("docker", marks=pytest.mark.docker)])
def engine(request, tmp_path):
    """A started sandbox of each engine (shell blocks)."""
    sandbox = make_engine(request.param, tmp_path)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture(
    params=["local_shell", pytest.param("docker-python", marks=pytest.mark.docker)],
)
def py_engine(request, tmp_path):
    """A started sandbox of each engine that can run Python blocks."""
    sandbox = make_engine(request.param, tmp_path)
    sandbox.start()
    yield sandbox
    sandbox.stop()


def run_ok(sandbox: Engine, language: str, code: str, timeout: float = 20) -> str:
    result = sandbox.run(language, code, timeout)
    assert result.ok, result
    return result.stdout


# ------------------------------------------------------------------ the contract


def test_shell_variables_and_functions_persist(engine):
    run_ok(engine, "bash", 'X=5\ngreet() { echo "hi $1"; }')
    assert run_ok(engine, "sh", "echo $X; greet you") == "5\nhi you\n"


def test_cd_persists(engine):
    run_ok(engine, "bash", "mkdir -p deeper/still && cd deeper/still")
    assert run_ok(engine, "shell", "pwd").endswith("/deeper/still\n")


def test_streams_are_apart_and_exact(engine):
    result = engine.run("bash", "printf 'no newline'; printf 'to err' >&2", 20)
    assert (result.stdout, result.stderr, result.exit_code) == ("no newline", "to err", 0)


def test_exit_status_of_the_last_command(engine):
    assert engine.run("bash", "false", 20).exit_code == 1
    assert engine.run("bash", "false; true", 20).exit_code == 0
    assert engine.run("bash", "no-such-command-here", 20).exit_code == 127


def test_quotes_and_specials_pass_through(engine):
    code = "echo 'single '\"'\"' quote' \"dollar \\$HOME\" back\\\\slash ünï\ncat <<'EOF'\n$NOT_EXPANDED '\nEOF"
    assert run_ok(engine, "bash", code) == (
        "single ' quote dollar $HOME back\\slash ünï\n$NOT_EXPANDED '\n"
    )


def test_syntax_error_fails_only_its_block(engine):
    run_ok(engine, "bash", "KEPT=yes")
    result = engine.run("bash", "if then fi (", 20)
    assert result.exit_code != 0 and result.stderr
    assert run_ok(engine, "bash", "echo $KEPT") == "yes\n"


def test_exit_ends_the_block_not_the_sandbox(engine):
    result = engine.run("bash", "echo bye; exit 3", 20)
    assert (result.stdout, result.exit_code) == ("bye\n", 3)
    assert run_ok(engine, "bash", "echo back") == "back\n"


def test_a_block_reading_stdin_reads_nothing(engine):
    result = engine.run("bash", "cat; read line; echo done $?", 5)
    assert (result.stdout, result.exit_code, result.timed_out) == ("done 1\n", 0, False)
    assert run_ok(engine, "bash", "echo next") == "next\n"


def test_timeout_kills_the_block_and_everything_it_started(engine):
    run_ok(engine, "bash", "BEFORE=1")
    result = engine.run("bash", f"echo started; sleep {secs('51')} & sleep {secs('5')}", 1)
    assert result.timed_out and result.exit_code == 124 and not result.ok
    assert result.stdout == "started\n"
    assert "timed out after 1 s" in result.stderr and "restarts" in result.stderr
    assert processes_running(secs("5")) == processes_running(secs("51")) == []
    # The sandbox goes on, with a fresh shell.
    assert run_ok(engine, "bash", "echo ${BEFORE:-gone}") == "gone\n"


def test_megabytes_on_both_streams_at_once(engine):
    code = f"(yes e | head -c {FIVE_MB} >&2) & yes o | head -c {FIVE_MB}; wait"
    result = engine.run("bash", code, 30)
    assert result.ok
    assert len(result.stdout) == FIVE_MB and len(result.stderr) == FIVE_MB
    assert set(result.stdout) == {"o", "\n"} and set(result.stderr) == {"e", "\n"}


def test_unknown_language_is_not_supported(engine):
    assert not engine.supports("rust") and not type(engine).supports("text")
    assert engine.supports("bash") and engine.supports("sh") and engine.supports("Python")
    with pytest.raises(EngineError, match="cannot run 'rust' blocks"):
        engine.run("rust", "fn main() {}", 5)


def test_stop_ends_everything_and_twice_is_fine(engine):
    run_ok(engine, "bash", f"sleep {secs('52')} >/dev/null 2>&1 &")
    assert started(secs("52"))
    engine.stop()
    assert processes_running(secs("52"), within=2) == []
    engine.stop()


def test_python_state_persists(py_engine):
    run_ok(py_engine, "python", "import math\nx = 21\ndef double(v):\n    return 2 * v")
    assert run_ok(py_engine, "py", "print(double(x), math.pi > 3)") == "42 True\n"


def test_python_errors_fail_only_their_block(py_engine):
    run_ok(py_engine, "python", "kept = 'yes'")
    result = py_engine.run("python", "def f():\n    raise ValueError('boom')\nf()", 20)
    assert result.exit_code == 1
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    assert 'File "<block-2>", line 3, in <module>' in result.stderr
    assert "raise ValueError('boom')" in result.stderr  # the source line is shown
    assert result.stderr.endswith("ValueError: boom\n") and "driver" not in result.stderr
    syntax = py_engine.run("python", "def (", 20)
    assert syntax.exit_code == 1 and "SyntaxError" in syntax.stderr
    assert py_engine.run("python", "import sys; print('x'); sys.exit(4)", 20).exit_code == 4
    assert run_ok(py_engine, "python", "print(kept)") == "yes\n"


def test_python_sees_a_clean_main(py_engine):
    code = "print(__name__, sorted(k for k in globals() if not k.startswith('__')))"
    assert run_ok(py_engine, "python", code) == "__main__ []\n"


def test_python_timeout_kills_its_children(py_engine):
    run_ok(py_engine, "python", "state = 1")
    code = f"import subprocess\nprint('go', flush=True)\nsubprocess.run(['sleep', '{secs('53')}'])"
    result = py_engine.run("python", code, 1)
    assert result.timed_out and result.exit_code == 124
    assert result.stdout == "go\n" and "the Python process restarts" in result.stderr
    assert processes_running(secs("53")) == []
    assert run_ok(py_engine, "python", "print('state' in globals())") == "False\n"


def test_python_megabytes_on_both_streams(py_engine):
    code = f"import sys\nprint('o' * {FIVE_MB}, end='')\nsys.stderr.write('e' * {FIVE_MB})"
    result = py_engine.run("python", code, 30)
    assert result.ok and result.stdout == "o" * FIVE_MB and result.stderr == "e" * FIVE_MB


# ------------------------------------------------------------- the local engine


@pytest.fixture
def local(tmp_path):
    sandbox = LocalShellEngine(ExecutionConfig(), tmp_path / "work")
    yield sandbox
    sandbox.stop()


def test_registered_under_its_name():
    assert engine_class("local_shell") is LocalShellEngine
    assert engine_class("docker").name == "docker"


def test_start_makes_the_workdir_and_returns_a_handle(tmp_path):
    config = ExecutionConfig(workdir="sub/dir", env={"GREETING": "hello there"})
    with LocalShellEngine(config, tmp_path / "work") as sandbox:
        handle = sandbox.start()
        assert handle["workdir"] == str(tmp_path / "work" / "sub" / "dir")
        assert isinstance(handle["pid"], int)
        assert (
            run_ok(sandbox, "bash", 'pwd; echo "$GREETING"')
            == f"{handle['workdir']}\nhello there\n"
        )
        assert (
            run_ok(sandbox, "python", "import os; print(os.getcwd())") == handle["workdir"] + "\n"
        )


def test_each_language_has_its_own_process(local):
    run_ok(local, "bash", "cd /")
    assert run_ok(local, "python", "import os; print(os.getcwd())") == str(local.workdir) + "\n"


def test_shell_messages_name_bash_not_its_path(local):
    result = local.run("bash", "no-such-command-here", 20)
    assert result.stderr.startswith("bash: ")


def test_timeout_also_kills_what_left_the_process_group(local):
    if not shutil.which("setsid"):
        pytest.skip("no setsid on this machine")
    result = local.run("bash", f"setsid sleep {secs('54')} & sleep {secs('5')}", 1)
    assert result.timed_out
    assert processes_running(secs("54")) == processes_running(secs("5")) == []


def test_exit_keeps_background_processes_until_stop(local):
    result = local.run("bash", f"sleep {secs('55')} >/dev/null 2>&1 & exit 7", 20)
    assert result.exit_code == 7
    assert started(secs("55"))
    local.stop()
    assert processes_running(secs("55")) == []


def test_destroy_from_the_handle(local):
    handle = local.start()
    run_ok(local, "bash", f"sleep {secs('56')} >/dev/null 2>&1 &")
    assert started(secs("56"))
    LocalShellEngine.destroy(handle)  # as `domarkx stop` would, from another process
    assert processes_running(secs("56")) == []


def test_run_after_stop_is_an_error(local):
    local.stop()
    with pytest.raises(EngineError, match="stopped"):
        local.run("bash", "true", 5)


def test_a_killed_process_reports_the_signal(local):
    assert local.run("bash", "kill -9 $$", 20).exit_code == 137
    assert run_ok(local, "bash", "echo alive") == "alive\n"
