"""Macros from other packages, through the ``domarkx.macros`` entry point group.

The plugin here is a real distribution: a module and a ``.dist-info`` folder
with ``entry_points.txt``, on ``PYTHONPATH`` of a ``domarkx`` subprocess, which
is how a ``pip install``-ed package is found. Nothing in domarkx is edited or
patched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from domarkx import registry

PLUGIN = '''\
"""A third-party macro package: domarkx-shout."""

from domarkx.parsing.macros import Expansion


def shout(call):
    """``[@text](domarkx://shout)`` -> TEXT; ``?text=`` overrides the link text."""
    return call.params.get("text", call.text).upper() + "!"


def snippet(call):
    """The file ``snippets/<name>.md`` of the project, its macros resolved there."""
    path = call.expander.root / "snippets" / (call.params["name"] + ".md")
    if not path.is_file():
        raise call.error(f"no snippet {call.params['name']!r}", hint="add it under snippets/")
    return Expansion(text=path.read_text(encoding="utf-8"), file=path)


def broken(call):
    return 1 / 0
'''

ENTRY_POINTS = """\
[domarkx.macros]
shout = domarkx_shout:shout
snippet = domarkx_shout:snippet
broken = domarkx_shout:broken
missing = domarkx_not_installed:thing
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder holding an installed-looking plugin distribution."""
    site = tmp_path / "site"
    info = site / "domarkx_shout-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "domarkx_shout.py").write_text(PLUGIN, encoding="utf-8")
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: domarkx-shout\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    return site


@pytest.fixture
def with_plugin(cli, site):
    def run(*args):
        return cli(*args, env={"PYTHONPATH": str(site)})

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
    assert err.startswith("domarkx: error: sessions/a.md:3: unknown macro `shout`")
    # With it installed, the hint of an unknown macro lists the plugin's commands too.
    project({"sessions/b.md": "## user\n\n[@x](domarkx://nope)\n"})
    _, _, err = with_plugin("import", "sessions/b.md")
    assert "or use one of: broken, date, include, missing, set, shout, snippet" in err


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ("[@x](domarkx://snippet?name=absent)", "sessions/a.md:4: no snippet 'absent'"),
        ("[@x](domarkx://broken)", "sessions/a.md:4: macro `broken` failed: ZeroDivisionError"),
        (
            "[@x](domarkx://missing)",
            "sessions/a.md:4: macro `missing` cannot be loaded: ModuleNotFoundError",
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
