"""A real S3 API server on 127.0.0.1 for the tests: moto in server mode, in its own process.

``s3_server`` (a fixture, one server per test process) starts ``moto_server``
on a free port and stops it at the end; ``server.bucket()`` makes a new empty
bucket for one test; ``server.objects(bucket)`` lists what a bucket holds
(name -> bytes) and ``server.put(bucket, name, data)`` writes an object as an
attacker with write access would (overwriting). It speaks the S3 HTTP API
(signature checks are moto's: any credentials are accepted), so the code
under test goes through its real client.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

# What the processes under test use to sign requests; moto accepts any key.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIADOMARKXTEST00001",
    "AWS_SECRET_ACCESS_KEY": "domarkx-test-secret-not-for-any-file",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class S3Server:
    """One ``moto_server`` process on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        moto = Path(sys.executable).with_name("moto_server")
        command = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
        self.process = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
        self._names = itertools.count()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2).close()
                return
            except (urllib.error.URLError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"domarkx-test-{os.getpid()}-{next(self._names)}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        return name

    def store(self, bucket: str):  # type: ignore[no-untyped-def]  # an obstore S3Store
        from obstore.store import S3Store

        return S3Store(
            bucket,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            client_options={"allow_http": True},
        )

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object of ``bucket``: name -> bytes."""
        import obstore

        store = self.store(bucket)
        found: dict[str, bytes] = {}
        for batch in obstore.list(store):
            for meta in batch:
                found[meta["path"]] = bytes(obstore.get(store, meta["path"]).bytes())
        return found

    def put(self, bucket: str, name: str, data: bytes) -> None:
        """Write ``name`` whatever it holds (what an attacker with write access can do)."""
        import obstore

        obstore.put(self.store(bucket), name, data)

    def delete(self, bucket: str, name: str) -> None:
        import obstore

        obstore.delete(self.store(bucket), name)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 API server on 127.0.0.1 (moto), for this test process."""
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()
