"""Plugins from other packages: macros, engines and model providers, through entry points.

The plugins here are a real distribution: modules and a ``.dist-info`` folder
with ``entry_points.txt``, on the import path of the ``domarkx`` command
(``PYTHONPATH``), which is how a ``pip install``-ed package is found. Nothing
in domarkx is edited or patched.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from domarkx import registry
from domarkx.data.layout import STAGES
from domarkx.errors import PluginError
from tests.support import doit_main, run_in_process

PLUGIN = '''\
"""A third-party plugin package: domarkx-shout."""

from domarkx.execution.local_shell import LocalShellEngine
from domarkx.parsing.macros import Expansion


def shout(call):
    """``[@text](domarkx://shout)`` -> TEXT; ``?text=`` overrides the link text."""
    return call.params.get("text", call.text).upper() + "!"


def snippet(call):
    """The file ``snippets/<name>.md`` of the project, its macros resolved there."""
    path = call.root / "snippets" / (call.params["name"] + ".md")
    if not path.is_file():
        raise call.error(f"no snippet {call.params['name']!r}", hint="add it under snippets/")
    return Expansion(text=path.read_text(encoding="utf-8"), file=path)


def quote(call):
    """The first line of ``path``, read through the macro contract (a build dependency)."""
    return "> " + call.read_text(call.params["path"]).splitlines()[0]


def broken(call):
    return 1 / 0


class LoudShell(LocalShellEngine):
    """Claims a built-in's name; must not replace it."""

    def run(self, language, code, timeout):
        raise AssertionError("the plugin replaced the built-in engine")
'''

BROKEN_ENGINE = '''\
"""An engine package whose import fails (a bug in it, or a missing dependency)."""

raise RuntimeError("the engine package is broken")
'''

ENTRY_POINTS = """\
[domarkx.macros]
shout = domarkx_shout:shout
snippet = domarkx_shout:snippet
quote = domarkx_shout:quote
broken = domarkx_shout:broken
missing = domarkx_not_installed:thing

[domarkx.engines]
crashing = domarkx_broken_engine:Engine

[domarkx.providers]
gone = domarkx_not_installed:Provider
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder holding an installed-looking plugin distribution."""
    site = tmp_path / "site"
    info = site / "domarkx_shout-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "domarkx_shout.py").write_text(PLUGIN, encoding="utf-8")
    (site / "domarkx_broken_engine.py").write_text(BROKEN_ENGINE, encoding="utf-8")
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: domarkx-shout\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    return site


RIVAL_ENTRY_POINTS = """\
[domarkx.macros]
include = domarkx_shout:shout

[domarkx.engines]
local_shell = domarkx_shout:LoudShell
"""


@pytest.fixture
def rival(site: Path) -> Path:
    """A second distribution beside ``site`` whose plugins take built-ins' names."""
    info = site / "domarkx_rival-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: domarkx-rival\nVersion: 2.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(RIVAL_ENTRY_POINTS, encoding="utf-8")
    return site


@pytest.fixture
def with_plugin(cli, site):
    """``domarkx ARGS`` with the plugin distribution installed (on its import path)."""

    def run(*args, env=None, **kwargs):
        return cli(*args, env={"PYTHONPATH": str(site), **(env or {})}, **kwargs)

    return run


def test_the_plugin_is_an_entry_point(site):
    code = textwrap.dedent(
        """
        import json
        from importlib.metadata import entry_points
        print(json.dumps(sorted((ep.name, ep.value) for ep in entry_points(group="domarkx.macros"))))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert ["shout", "domarkx_shout:shout"] in json.loads(done.stdout)


def test_a_third_party_macro_expands(project, with_plugin):
    project(
        {
            "sessions/a.md": "## user\n\n[@hello](domarkx://shout) and [@x](domarkx://shout?text=quiet)\n",
        }
    )
    code, out, err = with_plugin("import", "sessions/a.md")
    assert (code, err) == (0, ""), err
    code, out, _ = with_plugin("export", "a")
    assert out == "## user\n\nHELLO! and QUIET!\n"


def test_a_third_party_macro_may_return_an_expansion(project, with_plugin):
    project(
        {
            "sessions/a.md": "## assistant\n\n[@s](domarkx://snippet?name=greet)\n",
            "snippets/greet.md": "Hi [@i](domarkx://include?path=name.txt)\n\n```bash\necho hi\n```\n",
            "snippets/name.txt": "there",
        }
    )
    assert with_plugin("import", "sessions/a.md").code == 0
    assert with_plugin("export", "a").out == "## assistant\n\nHi there\n\n```bash\necho hi\n```\n"


def test_without_the_plugin_the_macro_is_unknown(project, cli, with_plugin):
    project({"sessions/a.md": "## user\n\n[@hello](domarkx://shout)\n"})
    code, _, err = cli("import", "sessions/a.md")
    assert code == 1
    assert err.startswith(
        "domarkx: error: sessions/a.md:3: unknown macro 'shout'; known: date, include, set"
    ), err
    # With it installed, the known macros are the plugin's commands too.
    project({"sessions/b.md": "## user\n\n[@x](domarkx://nope)\n"})
    _, _, err = with_plugin("import", "sessions/b.md")
    assert (
        "unknown macro 'nope'; known: broken, date, include, missing, quote, set, shout, snippet"
        in err
    )


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ("[@x](domarkx://snippet?name=absent)", "sessions/a.md:4: no snippet 'absent'"),
        ("[@x](domarkx://broken)", "sessions/a.md:4: macro `broken` failed: ZeroDivisionError"),
        (
            "[@x](domarkx://missing)",
            "sessions/a.md:4: the macro plugin `missing = domarkx_not_installed:thing` "
            "(from domarkx-shout) in domarkx.macros cannot be loaded: "
            "ModuleNotFoundError: No module named 'domarkx_not_installed'",
        ),
    ],
)
def test_a_failing_plugin_is_one_clear_error(project, with_plugin, doc, words):
    root = project({"sessions/a.md": f"## user\n\nline\n{doc}\n"})
    code, out, err = with_plugin("import", "sessions/a.md")
    assert (code, out) == (1, "")
    assert err.startswith(f"domarkx: error: {words}"), err
    assert "Traceback" not in err
    assert not (root / ".domarkx").exists()


def test_an_engine_plugin_that_fails_to_import_is_one_error(project, with_plugin):
    project(
        {
            "sessions/e.md": "```yaml session-config\nengine: crashing\n```\n\n## assistant\n\n```bash\necho hi\n```\n"
        }
    )
    assert with_plugin("import", "sessions/e.md").code == 0
    code, _, err = with_plugin("run", "e")
    assert code == 1
    assert err == (
        "domarkx: error: the engine plugin `crashing = domarkx_broken_engine:Engine` "
        "(from domarkx-shout) in domarkx.engines cannot be loaded: "
        "RuntimeError: the engine package is broken\n"
        "  hint: reinstall or uninstall the package that provides engine `crashing` "
        "(`--debug` shows the traceback)\n"
    )


def test_an_unknown_engine_or_provider_lists_the_known_ones(project, cli, with_plugin):
    project(
        {
            "sessions/a.md": "## user\n\nhi\n",
            "sessions/m.md": "```yaml session-config\nmodel:\n  provider: nobody\n  name: m\n```\n\n## user\n\nhi\n",
        }
    )
    assert cli("import", "sessions/a.md").code == 0
    code, _, err = cli("run", "a", "--engine", "warp")
    assert code == 1
    assert err.startswith("domarkx: error: unknown engine 'warp'; known: docker, local_shell\n")
    # An installed plugin is a known name, even one that cannot be loaded.
    _, _, err = with_plugin("run", "a", "--engine", "warp")
    assert "unknown engine 'warp'; known: crashing, docker, local_shell\n" in err
    assert cli("import", "sessions/m.md").code == 0
    code, _, err = with_plugin("run", "m")
    assert code == 1
    assert "unknown model provider 'nobody'; known: gone, openai, scripted\n" in err
    project(
        {
            "sessions/g.md": "```yaml session-config\nmodel:\n  provider: gone\n  name: m\n```\n\n## user\n\nhi\n"
        }
    )
    assert cli("import", "sessions/g.md").code == 0
    code, _, err = with_plugin("run", "g")
    assert code == 1 and "Traceback" not in err
    assert err.startswith(
        "domarkx: error: the model provider plugin `gone = domarkx_not_installed:Provider` "
        "(from domarkx-shout) in domarkx.providers cannot be loaded: ModuleNotFoundError"
    ), err


def test_a_broken_engine_plugin_does_not_stop_prune(project, cli, with_plugin):
    project({"sessions/a.md": "## assistant\n\n```bash\necho hi\n```\n"})
    assert cli("import", "sessions/a.md").code == 0
    instance = cli("run", "a").out.strip()
    assert instance[:12] in cli("instances", "--all").out
    # No Docker engine for this prune: it would remove other projects' containers.
    code, out, err = with_plugin("prune", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert code == 0, err
    assert "domarkx: warning: the engine plugin `crashing = domarkx_broken_engine:Engine`" in err
    assert "Traceback" not in err
    assert instance in out.split()  # the local instance was pruned all the same
    assert instance[:12] not in cli("instances", "--all").out


def test_a_plugin_does_not_replace_a_builtin(project, cli, rival):
    project(
        {
            "sessions/a.md": "## assistant\n\n[@x](domarkx://include?path=t.txt)\n\n```bash\necho built-in\n```\n",
            "sessions/t.txt": "included",
        }
    )
    env = {"PYTHONPATH": str(rival)}
    code, _, err = cli("import", "sessions/a.md", env=env)
    assert code == 0
    assert err == (
        "domarkx: warning: domarkx-rival registers the macro `include = domarkx_shout:shout` "
        "in domarkx.macros, the name of a built-in; the built-in `include` is used "
        "(give the plugin another name)\n"
    )
    code, instance, err = cli("run", "a", env=env)
    assert code == 0, err
    assert "registers the engine `local_shell = domarkx_shout:LoudShell`" in err
    out = cli("export", instance.strip()).out
    assert "included\n" in out and "X!" not in out
    assert re.search(r"```[a-z]* ?output[^\n]*\nbuilt-in\n```", out), out


def test_registering_a_builtin_name_at_run_time_is_refused():
    with pytest.raises(PluginError, match="'include' is a built-in macro"):
        registry.register("domarkx.macros", "include", lambda call: "")
    registry.register("domarkx.macros", "include", len, replace_builtin=True)
    try:
        assert registry.load("domarkx.macros", "include") is len
    finally:
        registry.unregister("domarkx.macros", "include")
    assert registry.load("domarkx.macros", "include").__name__ == "include"


def test_a_file_a_plugin_macro_read_is_a_build_dependency(project, site):
    """``call.read_text`` declares the file: editing it rebuilds exactly that session."""
    root = project(
        {
            "dodo.py": "from domarkx.pipeline.tasks import *  # noqa: F403\n",
            "sessions/q.md": "## user\n\n[@q](domarkx://quote?path=notes/motto.txt)\n",
            "sessions/other.md": "## user\n\nplain\n",
            "notes/motto.txt": "first motto\n",
        }
    )
    env = {"PYTHONPATH": str(site), "DOMARKX_HOME": None}

    def doit(*args):
        result = run_in_process(doit_main, args, cwd=root, env=env)
        assert result.code == 0, result.err
        return {line[3:] for line in result.out.splitlines() if line.startswith(".  ")}

    assert doit() == {f"{stage}:{name}" for stage in STAGES for name in ("q", "other")}
    assert "> first motto" in (root / ".domarkx/exports/q.md").read_text(encoding="utf-8")
    assert doit() == set()
    (root / "notes/motto.txt").write_text("second motto\n", encoding="utf-8")
    assert doit() == {"expand:q", "snapshot:q", "run:q", "export:q"}
    assert "> second motto" in (root / ".domarkx/exports/q.md").read_text(encoding="utf-8")
    assert doit() == set()


def test_builtins_are_registered_the_same_way():
    """domarkx's own macros are entry points of its own distribution (when installed)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        eps = distribution("domarkx").entry_points
    except PackageNotFoundError:
        pytest.skip("domarkx is not installed; the registry's BUILTINS stand in")
    macros = {ep.name: ep.value for ep in eps if ep.group == "domarkx.macros"}
    assert macros == {
        "include": "domarkx.parsing.builtin_macros:include",
        "set": "domarkx.parsing.builtin_macros:set_value",
        "date": "domarkx.parsing.builtin_macros:date",
    }
    assert macros.items() <= registry.BUILTINS["domarkx.macros"].items()
    assert {"include", "set", "date"} <= set(registry.names("domarkx.macros"))
