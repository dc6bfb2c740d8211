"""The shared cache's client (``domarkx.data.remote``) against a real S3 server and a folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from domarkx import config
from domarkx.data import remote
from domarkx.data.remote import SharedCache
from tests.s3server import CREDENTIALS, S3Server, free_port, s3_server  # noqa: F401


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(remote.WRITE_ENV, raising=False)
    remote.forget()
    config.forget()


def s3_cache(server: S3Server, bucket: str, write: bool = True) -> SharedCache:
    settings = config.CacheSettings(
        url=f"s3://{bucket}/team/cache", endpoint=server.endpoint, write=write
    )
    return SharedCache(settings.url or "", remote.open_store(settings), write=write)


def test_round_trip_is_content_addressed(s3_server: S3Server) -> None:  # noqa: F811
    bucket = s3_server.bucket()
    cache = s3_cache(s3_server, bucket)
    data = b'{"status": "done"}\n'
    assert cache.put("run", "k1", data) is True
    assert cache.get("run", "k1") == data
    assert cache.get("run", "other") is None
    blob = hashlib.sha256(data).hexdigest()
    objects = s3_server.objects(bucket)
    assert objects[f"team/cache/cas/{blob}"] == data
    entry = json.loads(objects["team/cache/ac/run/k1"])
    assert entry["digest"] == blob and entry["kind"] == "run" and entry["key"] == "k1"


def test_uploads_never_overwrite(s3_server: S3Server) -> None:  # noqa: F811
    cache = s3_cache(s3_server, s3_server.bucket())
    assert cache.put("replay", "k", b"first") is True
    assert cache.put("replay", "k", b"second") is False
    assert cache.get("replay", "k") == b"first"


def test_a_poisoned_blob_is_a_warning_and_a_miss(
    s3_server: S3Server,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = s3_server.bucket()
    cache = s3_cache(s3_server, bucket)
    cache.put("run", "k", b"the real outputs")
    blob = hashlib.sha256(b"the real outputs").hexdigest()
    s3_server.put(bucket, f"team/cache/cas/{blob}", b"rm -rf ~")
    assert cache.get("run", "k") is None
    err = capsys.readouterr().err
    assert f"cas/{blob} does not match its digest" in err
    assert "ac/run/k" in err and err.count("warning") == 1
    # Not repaired by an upload of the right bytes either: uploads never overwrite.
    cache.put("run", "k", b"the real outputs")
    assert s3_server.objects(bucket)[f"team/cache/cas/{blob}"] == b"rm -rf ~"
    assert cache.stats.rejected == 1


def test_an_entry_for_another_key_is_refused(
    s3_server: S3Server,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = s3_server.bucket()
    cache = s3_cache(s3_server, bucket)
    cache.put("run", "a", b"outputs of a")
    entry = s3_server.objects(bucket)["team/cache/ac/run/a"]
    s3_server.put(bucket, "team/cache/ac/run/b", entry)
    assert cache.get("run", "b") is None
    assert "ac/run/b is not an entry for this key" in capsys.readouterr().err


def test_read_only_uploads_nothing(s3_server: S3Server) -> None:  # noqa: F811
    bucket = s3_server.bucket()
    cache = s3_cache(s3_server, bucket, write=False)
    assert cache.put("run", "k", b"x") is False
    assert s3_server.objects(bucket) == {}


def test_an_unreachable_cache_is_one_warning(capsys: pytest.CaptureFixture[str]) -> None:
    settings = config.CacheSettings(
        url="s3://nowhere/x", endpoint=f"http://127.0.0.1:{free_port()}", write=True
    )
    cache = SharedCache("s3://nowhere/x", remote.open_store(settings), write=True)
    for key in ("a", "b", "c"):
        assert cache.get("run", key) is None
        assert cache.put("run", key, b"x") is False
    err = capsys.readouterr().err
    assert err.count("domarkx: warning:") == 1
    assert "shared cache s3://nowhere/x is unreachable" in err
    assert "building locally" in err
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in err


def test_a_folder_cache(tmp_path: Path) -> None:
    settings = config.CacheSettings(url=f"file://{tmp_path}/shared", write=True)
    cache = SharedCache(settings.url or "", remote.open_store(settings), write=True)
    assert cache.put("replay", "k", b"reply") is True
    assert cache.put("replay", "k", b"other") is False
    assert cache.get("replay", "k") == b"reply"
    blob = hashlib.sha256(b"reply").hexdigest()
    (tmp_path / "shared" / "cas" / blob).write_bytes(b"tampered")
    assert cache.get("replay", "k") is None


def test_the_project_file_names_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "user-config"))
    monkeypatch.delenv("DOMARKX_TRUST", raising=False)
    (tmp_path / "domarkx.toml").write_text(
        f'[cache]\nurl = "file://{tmp_path}/shared"\nwrite = false\n'
    )
    # A cache is a grant (its results would be taken): a file nobody trusted names none.
    assert remote.for_project(tmp_path) is None
    config.forget()
    monkeypatch.setenv("DOMARKX_TRUST", "1")
    cache = remote.for_project(tmp_path)
    assert cache is not None and cache.write is False
    remote.forget()
    monkeypatch.setenv(remote.WRITE_ENV, "1")
    cache = remote.for_project(tmp_path)
    assert cache is not None and cache.write is True
    remote.forget()
    monkeypatch.setenv(remote.WRITE_ENV, "maybe")
    with pytest.raises(remote.CacheError, match="DOMARKX_CACHE_WRITE='maybe'"):
        remote.for_project(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('url = "s3://KEY:SECRET@bucket/x"', "cache.url: Value error, must be s3://bucket/prefix"),
        ('url = "https://bucket/x"', "must start with s3:// or file:///"),
        ('url = "s3://b"\nendpoint = "127.0.0.1:9000"', "cache.endpoint"),
        ('url = "s3://b"\nendpoint = "http://k:s@127.0.0.1:9000"', "must not hold credentials"),
        ('url = "s3://b"\nwrite = "perhaps"', "cache.write"),
    ],
)
def test_bad_cache_settings_name_their_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "domarkx.toml").write_text(f"approve = 'ask'\n\n[cache]\n{text}\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(tmp_path)
    assert message in str(caught.value)
    assert caught.value.line is not None and caught.value.line >= 4
