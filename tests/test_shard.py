"""``domarkx build --shard I/N`` and ``--shard auto``: disjoint, complete, stable shards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from domarkx.pipeline import shard
from tests.support import domarkx, local_session, new_project, process_env

NAMES = [f"team{t}/s{i:03d}" for t in range(4) for i in range(60)]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_shards_are_disjoint_and_complete(count: int) -> None:
    parts = [shard.Shard(i, count).select(NAMES) for i in range(1, count + 1)]
    seen = [name for part in parts for name in part]
    assert sorted(seen) == sorted(NAMES)  # each session in exactly one shard
    assert len(seen) == len(set(seen))
    if count > 1:
        assert all(part for part in parts)  # 240 names: no shard is empty


def test_the_partition_is_the_same_in_every_process() -> None:
    code = (
        "import sys, json; from domarkx.pipeline import shard; "
        "print(json.dumps([shard.shard_of(n, 7) for n in json.loads(sys.stdin.read())]))"
    )
    import json

    answers = set()
    for seed in ("0", "1", "12345"):
        env = process_env({"PYTHONHASHSEED": seed})
        result = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(NAMES),
            capture_output=True,
            text=True,
            env=dict(env),
            check=True,
        )
        answers.add(result.stdout)
    assert answers == {json.dumps([shard.shard_of(n, 7) for n in NAMES]) + "\n"}


@pytest.mark.parametrize(
    ("env", "count", "expected"),
    [
        ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "3"}, None, (2, 3)),  # GitLab: from 1
        ({"BUILDKITE_PARALLEL_JOB": "0", "BUILDKITE_PARALLEL_JOB_COUNT": "4"}, None, (1, 4)),
        ({"CIRCLE_NODE_INDEX": "3", "CIRCLE_NODE_TOTAL": "4"}, None, (4, 4)),
        ({"JOB_COMPLETION_INDEX": "4"}, 5, (5, 5)),  # Kubernetes Indexed Job: from 0
        ({"DOMARKX_SHARD_INDEX": "1", "DOMARKX_SHARD_COUNT": "2"}, None, (1, 2)),
    ],
)
def test_auto_reads_the_ci_variables(
    env: dict[str, str], count: int | None, expected: tuple[int, int]
) -> None:
    found = shard.from_ci(env, count)
    assert (found.index, found.count) == expected


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--shard", "3"], {}, "give I/N"),
        (["--shard", "0/3"], {}, "the index must be from 1 to 3"),
        (["--shard", "4/3"], {}, "the index must be from 1 to 3"),
        (["--shard", "1/0"], {}, "the count must be at least 1"),
        (["--shard", "a/b"], {}, "whole numbers"),
        (["--shard", "auto"], {}, "none of CI_NODE_INDEX"),
        (["--shard", "auto"], {"JOB_COMPLETION_INDEX": "1"}, "add --shard-count N"),
        (["--shard", "auto", "--shard-count", "2"], {"JOB_COMPLETION_INDEX": "2"}, "from 0 to 1"),
        (["--shard", "auto"], {"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "x"}, "whole numbers"),
        (["--shard-count", "2"], {}, "--shard-count goes with --shard auto"),
    ],
)
def test_a_bad_shard_is_one_error(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    root = new_project(tmp_path / "p", {"sessions/a.md": local_session("echo a")})
    clean = {name: None for i, c, _ in shard.CI_VARIABLES for name in (i, c) if name}
    code, _, err = domarkx(root, "build", *args, env={**clean, **env})
    assert code == 1, err
    assert message in err
    assert "Traceback" not in err and err.count("error") == 1
    assert not (root / ".domarkx" / "exports").exists()  # nothing built


def test_shard_builds_build_every_session_once(tmp_path: Path) -> None:
    names = [f"s{i}" for i in range(9)]
    counter = tmp_path / "ran"
    counter.mkdir()
    files = {
        f"sessions/{name}.md": local_session(f"echo {name}; touch {counter}/{name}-$$")
        for name in names
    }
    origin = new_project(tmp_path / "origin", files)
    built: dict[int, set[str]] = {}
    for index in (1, 2, 3):
        clone = tmp_path / f"clone{index}"
        shutil.copytree(origin, clone)
        code, _, err = domarkx(clone, "build", "--shard", f"{index}/3")
        assert code == 0, err
        exports = clone / ".domarkx" / "exports"
        built[index] = {p.stem for p in exports.glob("*.md")} if exports.exists() else set()
        assert built[index] == set(shard.Shard(index, 3).select(names))
    assert set().union(*built.values()) == set(names)
    assert sum(len(b) for b in built.values()) == len(names)
    # Each session's code ran exactly once across the three machines.
    ran = sorted(p.name.split("-")[0] for p in counter.iterdir())
    assert ran == sorted(names)


def test_check_of_a_shard_checks_only_its_sessions(tmp_path: Path) -> None:
    names = [f"s{i}" for i in range(6)]
    root = new_project(
        tmp_path / "p", {f"sessions/{n}.md": local_session(f"echo {n}") for n in names}
    )
    one = shard.Shard(1, 2).select(names)
    code, out, err = domarkx(root, "build", "--shard", "1/2")
    assert code == 0, err
    code, out, err = domarkx(root, "build", "--check", "--shard", "1/2")
    assert code == 0, err
    assert f"every export matches the build ({len(one)} session" in out
    # The other shard's exports were never made: its check fails on them alone.
    code, out, err = domarkx(root, "build", "--check", "--shard", "2/2")
    assert code == 1
    assert all(f"{n}.md: missing" in err for n in names if n not in one)


def test_doit_honours_the_shard_variable(tmp_path: Path) -> None:
    from tests.support import doit

    names = [f"s{i}" for i in range(6)]
    root = new_project(
        tmp_path / "p", {f"sessions/{n}.md": local_session(f"echo {n}") for n in names}
    )
    code, _, err = doit(root, env={shard.ENV: "2/2"})
    assert code == 0, err
    built = {p.stem for p in (root / ".domarkx" / "exports").glob("*.md")}
    assert built == set(shard.Shard(2, 2).select(names))
    assert os.environ.get(shard.ENV) is None
