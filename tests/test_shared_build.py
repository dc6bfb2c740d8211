"""Builds on several machines sharing one cache: a real S3 server (moto) on 127.0.0.1.

Each "machine" is a fresh clone of the same project (no ``.domarkx/``). Real
runs are counted by a line each run appends to a file outside the project,
which a cached result cannot write; model calls by the requests that reach
the loopback chat-completions server.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from domarkx.data.layout import BUILD_CACHES
from tests.chat_server import ChatServer
from tests.s3server import CREDENTIALS, S3Server, free_port, s3_server  # noqa: F401
from tests.support import domarkx, local_session, make_files

MODEL_SESSION = """\
```yaml session-config
model:
  provider: openai
  name: test-model
  base_url: {base_url}
  api_key_env: DOMARKX_TEST_KEY
  temperature: 0
```

## user

> Say hello.
"""

CONFIG = """\
[endpoints.test]
base_url = "{base_url}"
api_key_env = "DOMARKX_TEST_KEY"

[cache]
url = "s3://{bucket}/team"
endpoint = "{endpoint}"
"""


def origin(tmp_path: Path, server: S3Server, chat: ChatServer, endpoint: str = "") -> Path:
    root = tmp_path / "origin"
    make_files(
        {
            "sessions": {
                "code.md": local_session(f"echo ran >> {tmp_path}/runs; echo hello from code"),
                "ask.md": MODEL_SESSION.format(base_url=chat.base_url),
            },
            "domarkx.toml": CONFIG.format(
                base_url=chat.base_url, bucket=server.bucket(), endpoint=endpoint or server.endpoint
            ),
        },
        root,
    )
    return root


def machine(tmp_path: Path, source: Path, name: str) -> Path:
    """A fresh clone of ``source``: the documents and the configuration, no store."""
    clone = tmp_path / name
    shutil.copytree(source, clone, ignore=shutil.ignore_patterns(".domarkx"))
    return clone


def build(root: Path, write: bool) -> tuple[int, str, str]:
    env: dict[str, str | None] = {
        **CREDENTIALS,
        "DOMARKX_TRUST": "1",  # a trusted checkout (CI): its [cache] is used
        "DOMARKX_TEST_KEY": "sk-test",
        "DOMARKX_CACHE_WRITE": "1" if write else None,
    }
    return domarkx(root, "build", env=env)


def runs(tmp_path: Path) -> int:
    path = tmp_path / "runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def exports(root: Path) -> dict[str, str]:
    folder = root / ".domarkx" / "exports"
    return {p.name: p.read_text() for p in sorted(folder.glob("*.md"))}


def bucket_of(root: Path) -> str:
    text = (root / "domarkx.toml").read_text()
    return text.split('url = "s3://', 1)[1].split("/", 1)[0]


def first_machine(tmp_path: Path, server: S3Server, chat: ChatServer) -> tuple[Path, str, Path]:
    """The project, its bucket, and machine ``a`` after a build that wrote the shared cache."""
    chat.reply("Hello from the model.")
    source = origin(tmp_path, server, chat)
    a = machine(tmp_path, source, "a")
    code, out, err = build(a, write=True)
    assert code == 0, out + err
    return source, bucket_of(source), a


def test_a_second_machine_runs_no_code_and_asks_no_model(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> None:
    with ChatServer() as chat:
        source, bucket, a = first_machine(tmp_path, s3_server, chat)
        assert runs(tmp_path) == 1 and len(chat.requests) == 1
        shared = s3_server.objects(bucket)
        kinds = {name.split("/")[2] for name in shared if name.startswith("team/ac/")}
        assert kinds == {"run", "replay", "snapshot"}

        b = machine(tmp_path, source, "b")
        code, out, err = build(b, write=False)
        assert code == 0, out + err
        assert runs(tmp_path) == 1  # no code ran on b
        assert len(chat.requests) == 1  # no model was asked from b
        assert exports(b) == exports(a)
        assert "Hello from the model." in exports(b)["ask.md"]
        assert s3_server.objects(bucket) == shared  # write = false: nothing uploaded
        assert "warning" not in err

    # Credentials go to the endpoint only: not into the store, the exports or the bucket.
    secrets = [CREDENTIALS["AWS_SECRET_ACCESS_KEY"], CREDENTIALS["AWS_ACCESS_KEY_ID"], "sk-test"]
    for clone in (a, b):
        for path in (clone / ".domarkx").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not any(s.encode() in data for s in secrets), path
    for name, data in s3_server.objects(bucket).items():
        assert not any(s.encode() in data for s in secrets), name


def test_a_poisoned_object_is_detected_and_not_used(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> None:
    with ChatServer() as chat:
        source, bucket, _ = first_machine(tmp_path, s3_server, chat)
        honest = exports(tmp_path / "a")

        # An attacker with write access swaps the bytes of the code session's run record.
        objects = s3_server.objects(bucket)
        entries = [json.loads(v) for k, v in objects.items() if k.startswith("team/ac/run/")]
        target = next(
            e["digest"] for e in entries if b"hello from code" in objects[f"team/cas/{e['digest']}"]
        )
        forged = objects[f"team/cas/{target}"].replace(b"hello from code", b"pwned")
        s3_server.put(bucket, f"team/cas/{target}", forged)

        c = machine(tmp_path, source, "c")
        code, out, err = build(c, write=True)
        assert code == 0, out + err
        assert f"cas/{target} does not match its digest" in err
        assert err.count("domarkx: warning:") == 1
        assert runs(tmp_path) == 2  # the poisoned session ran on c, locally
        assert len(chat.requests) == 1  # the untouched one came from the cache
        assert exports(c) == honest
        assert "pwned" not in exports(c)["code.md"]
        # Not re-uploaded over, nor repaired: uploads never overwrite.
        assert s3_server.objects(bucket)[f"team/cas/{target}"] == forged
        assert hashlib.sha256(forged).hexdigest() != target


def test_an_unreachable_cache_is_one_warning_and_a_local_build(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> None:
    with ChatServer() as chat:
        chat.reply("Hello from the model.")
        source = origin(tmp_path, s3_server, chat, endpoint=f"http://127.0.0.1:{free_port()}")
        code, out, err = build(machine(tmp_path, source, "a"), write=True)
        assert code == 0, out + err
        assert err.count("domarkx: warning:") == 1
        assert "is unreachable" in err and "building locally" in err
        assert runs(tmp_path) == 1 and len(chat.requests) == 1


def test_replies_are_shared_without_the_run_records(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> None:
    with ChatServer() as chat:
        source, bucket, _ = first_machine(tmp_path, s3_server, chat)
        for name in s3_server.objects(bucket):
            if name.startswith("team/ac/run/"):
                s3_server.delete(bucket, name)
        b = machine(tmp_path, source, "b")
        code, out, err = build(b, write=False)
        assert code == 0, out + err
        assert runs(tmp_path) == 2  # no run record: the code ran again
        assert len(chat.requests) == 1  # but the model's reply came from the shared cache
        assert "Hello from the model." in exports(b)["ask.md"]


def test_a_check_after_the_shards_has_nothing_left_to_run(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> None:
    with ChatServer() as chat:
        chat.reply("Hello from the model.")
        source = origin(tmp_path, s3_server, chat)
        built: dict[str, str] = {}
        for index in (1, 2):
            clone = machine(tmp_path, source, f"shard{index}")
            code, out, err = domarkx(
                clone,
                "build",
                "--shard",
                f"{index}/2",
                env={**CREDENTIALS, "DOMARKX_TEST_KEY": "sk-test", "DOMARKX_CACHE_WRITE": "1"},
            )
            assert code == 0, out + err
            built.update(exports(clone))
        assert sorted(built) == ["ask.md", "code.md"]
        assert runs(tmp_path) == 1 and len(chat.requests) == 1
        # The last job: a checkout whose committed exports are the shards' work.
        final = machine(tmp_path, source, "final")
        make_files({".domarkx": {"exports": built}}, final)
        code, out, err = domarkx(
            final, "build", "--check", env={**CREDENTIALS, "DOMARKX_TEST_KEY": "sk-test"}
        )
        assert code == 0, out + err
        assert "every export matches the build (2 sessions)" in out
        assert runs(tmp_path) == 1 and len(chat.requests) == 1  # nothing ran, nobody was asked


@pytest.mark.parametrize("write", [False, True])
def test_only_a_writer_uploads(tmp_path: Path, s3_server: S3Server, write: bool) -> None:  # noqa: F811
    with ChatServer() as chat:
        chat.reply("Hello from the model.")
        source = origin(tmp_path, s3_server, chat)
        code, out, err = build(machine(tmp_path, source, "a"), write=write)
        assert code == 0, out + err
        assert bool(s3_server.objects(bucket_of(source))) is write


def test_a_record_from_the_shared_cache_brings_the_duration_of_its_run(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> None:
    with ChatServer() as chat:
        chat.reply("Hello from the model.")
        source = origin(tmp_path, s3_server, chat)
        env: dict[str, str | None] = {
            **CREDENTIALS,
            "DOMARKX_TRUST": "1",
            "DOMARKX_TEST_KEY": "sk-test",
        }
        a = machine(tmp_path, source, "a")
        code, out, err = domarkx(
            a, "build", "--store-durations", env={**env, "DOMARKX_CACHE_WRITE": "1"}
        )
        assert code == 0, out + err
        b = machine(tmp_path, source, "b")
        code, out, err = domarkx(b, "build", "--store-durations", env=env)
        assert code == 0, out + err
        assert runs(tmp_path) == 1 and len(chat.requests) == 1  # b ran nothing
        table = json.loads((a / ".domarkx" / "durations.json").read_text())
        assert sorted(table) == ["ask", "code"]
        # b knows what a cold build costs: the seconds a's runs took, not its own cache hits.
        assert json.loads((b / ".domarkx" / "durations.json").read_text()) == table


def test_an_unreachable_cache_is_one_warning_in_a_build_of_many_processes(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> None:
    with ChatServer() as chat:
        chat.reply("Hello from the model.")
        source = origin(tmp_path, s3_server, chat, endpoint=f"http://127.0.0.1:{free_port()}")
        more = {
            f"code{i}.md": local_session(f"echo ran >> {tmp_path}/runs; echo {i}") for i in range(6)
        }
        make_files({"sessions": more}, source)
        a = machine(tmp_path, source, "a")
        env: dict[str, str | None] = {
            **CREDENTIALS,
            "DOMARKX_TRUST": "1",
            "DOMARKX_TEST_KEY": "sk-test",
            "DOMARKX_CACHE_WRITE": "1",
        }
        # A process of its own, as in CI (this one's S3 client threads are not to be forked).
        code, out, err = domarkx(a, "build", "-n", "2", "-P", "process", env=env, process=True)
        assert code == 0, out + err
        assert runs(tmp_path) == 7 and len(chat.requests) == 1  # built locally
        assert err.count("domarkx: warning:") == 1, err
        assert "is unreachable" in err and "building locally" in err
        # The next build with something to run warns again: once per build, not for ever.
        more = {
            f"code{i}.md": local_session(f"echo ran >> {tmp_path}/runs; echo again {i}")
            for i in range(6)
        }
        make_files({"sessions": more}, a)
        code, out, err = domarkx(a, "build", "-n", "2", "-P", "process", env=env, process=True)
        assert code == 0, out + err
        assert err.count("domarkx: warning:") == 1, err


def snapshot_id(root: Path, name: str) -> str:
    return (root / ".domarkx" / BUILD_CACHES / "snapshot" / f"{name}.id").read_text().split()[0]


def test_a_snapshot_made_elsewhere_comes_from_the_shared_cache(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> None:
    with ChatServer() as chat:
        source, bucket, a = first_machine(tmp_path, s3_server, chat)
        ran = snapshot_id(a, "code")
        assert f"team/ac/snapshot/{ran}" in s3_server.objects(bucket)
        code, shown_on_a, err = domarkx(a, "export", ran)
        assert code == 0, err

        # b never built: the id (from a's log, say) is all it has.
        b = machine(tmp_path, source, "b")
        env = {**CREDENTIALS, "DOMARKX_TRUST": "1"}
        code, out, err = domarkx(b, "export", ran, env=env)
        assert code == 0, out + err
        assert out == shown_on_a and "hello from code" in out
        assert (b / ".domarkx" / "snapshots" / f"{ran}.json").exists()  # kept here
        assert runs(tmp_path) == 1  # exporting a snapshot runs nothing


def test_a_snapshot_entry_that_names_another_snapshot_is_refused(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
) -> None:
    with ChatServer() as chat:
        source, bucket, a = first_machine(tmp_path, s3_server, chat)
        code_id, ask_id = snapshot_id(a, "code"), snapshot_id(a, "ask")
        # Someone with write access points the code session's entry at the other snapshot:
        # a well-formed entry, a blob whose bytes match its digest, the wrong content.
        objects = s3_server.objects(bucket)
        entry = json.loads(objects[f"team/ac/snapshot/{code_id}"])
        other = json.loads(objects[f"team/ac/snapshot/{ask_id}"])
        entry["digest"] = other["digest"]
        s3_server.put(bucket, f"team/ac/snapshot/{code_id}", json.dumps(entry).encode())

        b = machine(tmp_path, source, "b")
        env = {**CREDENTIALS, "DOMARKX_TRUST": "1"}
        code, _out, err = domarkx(b, "export", code_id, env=env)
        assert code == 1
        assert f"ac/snapshot/{code_id} names a blob that is not its record" in err
        assert f"no instance or snapshot matches {code_id!r}" in err
        assert "Traceback" not in err
        assert not (b / ".domarkx" / "snapshots" / f"{code_id}.json").exists()
