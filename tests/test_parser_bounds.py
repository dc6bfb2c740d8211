"""What a document may make an import read and produce (spec tools-chat-trust 3.2).

Macros are found in time linear in the text; their expansion is bounded
(``[limits] expansion``, 10 MB by default); an include never reads a
dotfile or a key file unless ``[includes] allow`` lists it. Each refusal is
one error naming the file and the line of the macro, exit status 1, nothing
stored.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

OPEN_MACRO = "[@a](domarkx://"


def stored(root: Path) -> list[Path]:
    return list((root / ".domarkx").glob("**/snapshots/*")) if (root / ".domarkx").exists() else []


def test_many_macros_left_open_are_read_in_linear_time(project, cli_process):
    # 40,000 unclosed links: the pattern's own search took minutes (each rescans the rest).
    text = OPEN_MACRO * 40_000
    root = project({"sessions/a.md": f"## user\n\n{text}\n"})
    code, out, err = cli_process("import", "sessions/a.md", timeout=120)
    assert (code, err) == (0, "")
    snapshot_id = out.split()[0]
    code, exported, err = cli_process("export", snapshot_id)
    assert code == 0, err
    assert text in exported  # left as written: none of them is a macro
    assert stored(root)


def bomb(levels: int, fan_out: int, leaf: int) -> dict[str, str]:
    """part0.md holds ``leaf`` characters; part(N) includes part(N-1) ``fan_out`` times."""
    files = {"sessions/part0.md": "x" * leaf}
    for level in range(1, levels + 1):
        include = f"[@p](domarkx://include?path=part{level - 1}.md)"
        files[f"sessions/part{level}.md"] = "\n\n".join([include] * fan_out)
    files["sessions/main.md"] = (
        f"## user\n\nSmall so far.\n\n[@p](domarkx://include?path=part{levels}.md)\n"
    )
    return files


def test_an_include_bomb_stops_at_the_bound_with_one_error(project, cli):
    # 10**7 characters of a 100-character file, from 61 lines; the bound is 1 MB.
    root = project(
        {**bomb(levels=5, fan_out=10, leaf=100), "domarkx.toml": '[limits]\nexpansion = "1m"\n'}
    )
    code, out, err = cli("import", "sessions/main.md")
    assert code == 1 and out == ""
    [first, *rest] = err.splitlines()
    assert first.startswith("domarkx: error: sessions/part1.md:")
    assert "macros expand this document past 1 MB" in first
    assert "include chain: sessions/main.md:5 -> sessions/part5.md:1" in first
    assert "expansion" in "\n".join(rest) and "Traceback" not in err
    assert not stored(root)


def test_the_default_bound_is_10_mb(project, cli):
    # Eleven includes of a 1 MB file: the eleventh, at line 25, passes 10 MB.
    lines = "\n\n".join(["[@b](domarkx://include?path=big.md)"] * 11)
    root = project(
        {"sessions/big.md": "y" * (1 << 20), "sessions/main.md": f"## user\n\n{lines}\n"}
    )
    code, _, err = cli("import", "sessions/main.md")
    assert code == 1
    assert err.startswith(
        "domarkx: error: sessions/main.md:23: macros expand this document "
        "past 10 MB (at `[@b](domarkx://include)`)"
    )
    assert not stored(root)
    # Ten are within it.
    (root / "sessions" / "main.md").write_text(
        "## user\n\n" + "\n\n".join(["[@b](domarkx://include?path=big.md)"] * 10) + "\n"
    )
    code, _, err = cli("import", "sessions/main.md")
    assert (code, err) == (0, "")


def test_a_set_value_repeated_by_parameters_is_bounded_too(project, cli):
    value = "z" * 4000
    macros = " ".join(["[@v](domarkx://v)"] * 300)  # 1.2 MB of one 4 KB parameter
    root = project(
        {
            "sessions/main.md": f"---\nparams:\n  v: {value}\n---\n\n## user\n\n{macros}\n",
            "domarkx.toml": '[limits]\nexpansion = "1m"\n',
        }
    )
    code, _, err = cli("import", "sessions/main.md")
    assert code == 1
    assert err.startswith("domarkx: error: sessions/main.md:8: macros expand this document past")
    assert not stored(root)


# Includes never read secrets unless the configuration lists them ---------------------------

SECRETS = {
    ".env": "API_KEY=hunter2\n",
    ".git/config": "[core]\n",
    "keys/id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    "certs/server.pem": "-----BEGIN CERTIFICATE-----\n",
    "tls.key": "-----BEGIN PRIVATE KEY-----\n",
    "sessions/.hidden/notes.md": "hidden\n",
}


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("../.env", "`.env` is a dotfile"),
        ("../.git/config", "`.git` is a dot folder"),
        ("../keys/id_rsa", "`id_rsa` is a key file"),
        ("../certs/server.pem", "`server.pem` is a key file"),
        ("../tls.key", "`tls.key` is a key file"),
        (".hidden/notes.md", "`.hidden` is a dot folder"),
    ],
)
def test_an_include_of_a_secret_is_refused_at_its_line(project, cli, path, words):
    root = project(
        {**SECRETS, "sessions/main.md": f"## user\n\nSee:\n\n[@s](domarkx://include?path={path})\n"}
    )
    code, out, err = cli("import", "sessions/main.md")
    assert code == 1 and out == ""
    [first, hint] = err.splitlines()
    assert first.startswith(
        f"domarkx: error: sessions/main.md:5: include `{path}` refused: {words}"
    )
    assert "[includes] allow" in hint
    assert not stored(root)
    assert "hunter2" not in err


def test_a_link_to_a_secret_or_named_as_one_is_refused(project, cli):
    root = project({**SECRETS, "sessions/plain.md": "plain\n"})
    os.symlink(root / ".env", root / "sessions" / "notes.md")
    os.symlink(root / "sessions" / "plain.md", root / "sessions" / ".env")
    for name, words in (("notes.md", "`.env` is a dotfile"), (".env", "`.env` is a dotfile")):
        (root / "sessions" / "main.md").write_text(
            f"## user\n\n[@s](domarkx://include?path={name})\n"
        )
        code, _, err = cli("import", "sessions/main.md")
        assert code == 1 and words in err and "hunter2" not in err, err


def test_the_configuration_allows_a_secret_looking_file(project, cli):
    root = project(
        {
            **SECRETS,
            ".github/workflow.yml": "on: push\n",
            "sessions/main.md": "## user\n\n"
            "[@e](domarkx://include?path=../.env)\n\n"
            "[@w](domarkx://include?path=../.github/workflow.yml)\n",
            "domarkx.toml": '[includes]\nallow = [".env", ".github"]\n',
        }
    )
    code, out, err = cli("import", "sessions/main.md")
    assert (code, err) == (0, ""), err
    code, exported, _ = cli("export", out.split()[0])
    assert "API_KEY=hunter2" in exported and "on: push" in exported
    # A pattern allows what it names, nothing more.
    (root / "domarkx.toml").write_text('[includes]\nallow = [".github/*.yml"]\n')
    code, _, err = cli("import", "sessions/main.md")
    assert code == 1 and "`.env` is a dotfile" in err


def test_ordinary_files_that_look_alike_are_included(project, cli):
    root = project(
        {
            "sessions/env.md": "env\n",
            "sessions/keyboard.md": "keys\n",
            "sessions/main.md": "## user\n\n[@a](domarkx://include?path=env.md) "
            "[@b](domarkx://include?path=./keyboard.md)\n",
        }
    )
    code, _, err = cli("import", "sessions/main.md")
    assert (code, err) == (0, ""), err
    assert stored(root)


def test_an_untrusted_configuration_lowers_bounds_but_grants_nothing(project, cli, monkeypatch):
    monkeypatch.delenv("DOMARKX_TRUST")
    eleven = "\n\n".join(["[@b](domarkx://include?path=big.md)"] * 11)
    root = project(
        {
            **SECRETS,
            "sessions/big.md": "y" * (1 << 20),
            "sessions/main.md": f"## user\n\n{eleven}\n",
            "sessions/env.md": "## user\n\n[@e](domarkx://include?path=../.env)\n",
            "domarkx.toml": '[limits]\nexpansion = "20m"\n\n[includes]\nallow = [".env"]\n',
        }
    )
    code, _, err = cli("import", "sessions/main.md")
    assert code == 1 and "past 10 MB" in err and "domarkx trust" in err
    code, _, err = cli("import", "sessions/env.md")
    assert code == 1 and "`.env` is a dotfile" in err and "hunter2" not in err
    # Trusted, both grants hold.
    code, _, err = cli("import", "sessions/main.md", env={"DOMARKX_TRUST": "1"})
    assert (code, err) == (0, "")
    code, _, err = cli("import", "sessions/env.md", env={"DOMARKX_TRUST": "1"})
    assert (code, err) == (0, "")
    # A lower bound needs no trust.
    (root / "domarkx.toml").write_text('[limits]\nexpansion = "2m"\n')
    code, _, err = cli("import", "sessions/main.md")
    assert code == 1 and "past 2 MB" in err


def test_a_document_without_macros_does_not_read_the_configuration(project, cli):
    project({"sessions/a.md": "## user\n\nhi\n", "domarkx.toml": "network = 1\n"})
    code, _, err = cli("import", "sessions/a.md")
    assert (code, err) == (0, "")
    (Path("sessions") / "b.md").write_text("## user\n\n[@x](domarkx://set?value=1)\n")
    code, _, err = cli("import", "sessions/b.md")
    assert code == 1 and "domarkx.toml:1: network: unknown key" in err
