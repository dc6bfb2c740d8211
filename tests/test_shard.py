"""``domarkx build --shard I/N`` and ``--shard auto``: disjoint, complete, stable shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from domarkx.data.layout import Layout
from domarkx.pipeline import shard
from tests.support import doit, domarkx, local_session, new_project, process_env

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
    names = [f"s{i}" for i in range(6)]
    root = new_project(
        tmp_path / "p", {f"sessions/{n}.md": local_session(f"echo {n}") for n in names}
    )
    code, _, err = doit(root, env={shard.ENV: "2/2"})
    assert code == 0, err
    built = {p.stem for p in (root / ".domarkx" / "exports").glob("*.md")}
    assert built == set(shard.Shard(2, 2).select(names))
    assert os.environ.get(shard.ENV) is None


# A skewed project: four sessions of a minute, forty of a second, the rest (196) short.
SKEWED = {
    **{name: 60_000 for name in NAMES[:4]},
    **{name: 1_000 for name in NAMES[4:44]},
    **{name: 50 for name in NAMES[44:]},
}


def loads(parts: list[list[str]], durations: dict[str, int]) -> list[int]:
    return [sum(durations[name] + shard.BASE_MS for name in part) for part in parts]


def test_recorded_durations_balance_a_skewed_project() -> None:
    count = 4
    by_name = [shard.Shard(i, count).select(NAMES) for i in range(1, count + 1)]
    balanced = [shard.Shard(i, count).select(NAMES, SKEWED) for i in range(1, count + 1)]
    by_name_loads, balanced_loads = loads(by_name, SKEWED), loads(balanced, SKEWED)
    assert max(balanced_loads) < max(by_name_loads)
    # Longest first onto the least loaded: the spread is at most the heaviest session.
    assert max(balanced_loads) - min(balanced_loads) <= max(SKEWED.values()) + shard.BASE_MS
    # Each minute-long session has a shard of its own.
    minutes = [sum(name in part for name in NAMES[:4]) for part in balanced]
    assert minutes == [1, 1, 1, 1]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 300])
def test_balanced_shards_are_disjoint_and_complete(count: int) -> None:
    parts = [shard.Shard(i, count).select(NAMES, SKEWED) for i in range(1, count + 1)]
    seen = [name for part in parts for name in part]
    assert sorted(seen) == sorted(NAMES)
    assert len(seen) == len(set(seen))
    if count <= len(NAMES):
        assert all(parts)


def test_a_stale_durations_file_still_partitions_every_session() -> None:
    # The file knows sessions that are gone and lacks sessions added since.
    gone = {f"old/s{i}": 90_000 for i in range(10)}
    table = {**gone, **{name: SKEWED[name] for name in NAMES[:100]}}
    names = NAMES + [f"new/s{i:03d}" for i in range(30)]
    parts = [shard.Shard(i, 3).select(names, table) for i in range(1, 4)]
    seen = [name for part in parts for name in part]
    assert sorted(seen) == sorted(names) and len(seen) == len(set(seen))
    # A session the file lacks counts as the mean of those it knows that still exist.
    known = [table[name] for name in names if name in table]
    mean = sum(known) // len(known)
    weights = {name: table.get(name, mean) for name in names}
    spread = loads(parts, weights)
    assert max(spread) - min(spread) <= max(weights.values()) + shard.BASE_MS


def test_balanced_shards_are_the_same_in_every_process(tmp_path: Path) -> None:
    root = new_project(tmp_path / "p", {})
    table = {name: ms / 1000 for name, ms in SKEWED.items()}
    (root / ".domarkx").mkdir()
    (root / ".domarkx" / "durations.json").write_text(json.dumps(table))
    code = (
        "import sys, json; from domarkx.data.layout import Layout; "
        "from domarkx.pipeline import shard; names = json.loads(sys.stdin.read()); "
        "table = shard.read_durations(Layout(sys.argv[1])); "
        "print(json.dumps([shard.Shard(i, 5).select(names, table) for i in range(1, 6)]))"
    )
    answers = set()
    for seed in ("0", "1", "12345"):
        result = subprocess.run(
            [sys.executable, "-c", code, str(root)],
            input=json.dumps(list(reversed(NAMES))),  # the order of the list does not matter
            capture_output=True,
            text=True,
            env=dict(process_env({"PYTHONHASHSEED": seed})),
            check=True,
        )
        answers.add(result.stdout)
    table_ms = shard.read_durations(Layout(str(root)))
    expected = [sorted(shard.Shard(i, 5).select(NAMES, table_ms)) for i in range(1, 6)]
    assert len(answers) == 1
    assert [sorted(part) for part in json.loads(answers.pop())] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object of session names to seconds"),
        ('{"a": "slow"}', "'a': 'slow' is not a number of seconds"),
        ('{"a": -1}', "'a': -1 is not a number of seconds"),
    ],
)
def test_a_broken_durations_file_is_one_error(tmp_path: Path, text: str, message: str) -> None:
    root = new_project(tmp_path / "p", {"sessions/a.md": local_session("echo a")})
    (root / ".domarkx").mkdir()
    (root / ".domarkx" / "durations.json").write_text(text)
    code, _, err = domarkx(root, "build", "--shard", "1/2")
    assert code == 1, err
    assert ".domarkx/durations.json" in err and message in err
    assert "--store-durations" in err  # what to do
    assert "Traceback" not in err and err.count("error") == 1
    # Without --shard the file is not read: the build goes on.
    code, _, err = domarkx(root, "build")
    assert code == 0, err


@pytest.mark.parametrize("value, durations", [("abc", None), ("1/2", "{bad")])
def test_plain_doit_with_a_bad_shard_is_one_error_line(
    tmp_path: Path, value: str, durations: str | None
) -> None:
    root = new_project(tmp_path / "p", {"sessions/a.md": local_session("echo a")})
    if durations is not None:
        (root / ".domarkx").mkdir()
        (root / ".domarkx" / "durations.json").write_text(durations)
    code, _, err = doit(root, env={shard.ENV: value}, process=True)
    assert code != 0
    assert "Traceback" not in err
    assert err.startswith("ERROR: ") and (shard.ENV in err or "durations.json" in err)
    assert not (root / ".domarkx" / "exports").exists()  # nothing was built


def test_store_durations_then_shards_balanced_by_them(tmp_path: Path) -> None:
    counter = tmp_path / "ran"
    counter.mkdir()
    slow = ["slow1", "slow2"]
    quick = [f"q{i}" for i in range(6)]
    files = {
        f"sessions/{name}.md": local_session(
            f"{'sleep 0.5; ' if name in slow else ''}touch {counter}/{name}-$$"
        )
        for name in slow + quick
    }
    origin = new_project(tmp_path / "origin", files)
    code, out, err = domarkx(origin, "build", "--store-durations")
    assert code == 0, err
    assert "recorded the durations of 8 sessions in .domarkx/durations.json" in out
    table = json.loads((origin / ".domarkx" / "durations.json").read_text())
    assert sorted(table) == sorted(slow + quick)
    assert all(table[name] >= 0.5 for name in slow)  # each slept half a second
    # A session removed, one added: storing again drops the one and adds the other.
    (origin / "sessions" / "q5.md").unlink()
    (origin / "sessions" / "q6.md").write_text(local_session(f"touch {counter}/q6-$$"))
    code, out, err = domarkx(origin, "build", "--store-durations")
    assert code == 0, err
    assert "recorded the durations of 8 sessions" in out  # q6 ran; the others from the cache
    table = json.loads((origin / ".domarkx" / "durations.json").read_text())
    assert "q5" not in table and "q6" in table

    # The team commits the file; each CI job is a fresh clone with it and no caches.
    names = sorted([*slow, *quick[:5], "q6"])
    for item in counter.iterdir():
        item.unlink()
    committed = shard.read_durations(Layout(str(origin)))
    assert committed is not None
    built: dict[int, set[str]] = {}
    for index in (1, 2):
        clone = tmp_path / f"clone{index}"
        shutil.copytree(origin, clone, ignore=shutil.ignore_patterns(".domarkx"))
        (clone / ".domarkx").mkdir()
        shutil.copy(origin / ".domarkx" / "durations.json", clone / ".domarkx")
        code, _, err = domarkx(clone, "build", "--shard", f"{index}/2")
        assert code == 0, err
        built[index] = {p.stem for p in (clone / ".domarkx" / "exports").glob("*.md")}
        assert built[index] == set(shard.Shard(index, 2).select(names, committed))
        code, out, err = domarkx(clone, "build", "--check", "--shard", f"{index}/2")
        assert code == 0, err
    assert built[1] | built[2] == set(names) and not built[1] & built[2]
    assert all(any(name in built[i] for name in slow) for i in (1, 2))  # one slow one each
    ran = sorted(p.name.split("-")[0] for p in counter.iterdir())
    assert ran == names  # every session's code ran exactly once across the two machines
