"""A cache shared between machines: an S3-compatible bucket or a folder (``[cache]``).

Part of the data layer (it imports only the root ``config`` and ``errors``);
the build's run records and the model replay records look here after their
local files and before running code or asking a model.

Objects are content-addressed, as in Bazel's remote cache:

- ``cas/<sha256>``: the bytes of a file (a run record, a replay record, a
  snapshot), named by their SHA-256; every read is hashed again and a
  mismatch is a warning naming the object, then a miss: the work is done
  locally and the poisoned object is never used nor uploaded again.
- ``ac/<kind>/<key>``: a small JSON entry that says which blob answers for a
  key (a run key, a replay request key, a snapshot id).

Every upload is create-if-absent (a conditional put): an existing object is
never overwritten, so a later writer cannot replace what an earlier one put,
and a poisoned blob cannot be "repaired" into another. What may be written
at all is the trust decision: only machines with ``write = true`` (or
``DOMARKX_CACHE_WRITE=1``), meant for trusted CI jobs, upload.

The client is obstore (the Rust ``object_store`` crate), an optional extra
(``domarkx[cache]``): it signs S3 requests, reads the standard credential
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``, web identity, instance roles) and
sends them only to the cache's endpoint. Nothing here writes them anywhere.

An unreachable cache is one warning per build and the build goes on
locally; the cache is not asked again for a minute. A build of several
processes (``-P process``) shares what it warned about through a mark per
warning in the store (``Layout.shared_cache_marks_dir``), named by the build
that holds the build lock: the first process warns, the others keep quiet,
and after an "unreachable" they do not ask the cache either.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from domarkx.data.atomic import write_atomic
from domarkx.data.layout import Layout, find_root
from domarkx.errors import DomarkxError

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

    from domarkx.config import CacheSettings

WRITE_ENV = "DOMARKX_CACHE_WRITE"
KINDS = ("run", "replay", "snapshot")
ENTRY_FORMAT = 1
# After a failure the cache rests this long before it is asked again (a long watch).
RETRY_AFTER = 60.0
UNREACHABLE = "is unreachable"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class CacheError(DomarkxError):
    """The shared cache is configured wrongly (its client is missing, a bad URL)."""


@dataclass
class Stats:
    """What a process moved: objects and bytes each way."""

    hits: int = 0
    misses: int = 0
    bytes_down: int = 0
    uploads: int = 0
    bytes_up: int = 0
    rejected: int = 0  # objects whose digest did not match


@dataclass
class SharedCache:
    """One shared cache: ``get``/``put`` by kind and key, checked and create-if-absent."""

    url: str
    store: Any  # an obstore store
    write: bool = False
    stats: Stats = field(default_factory=Stats)
    _failed_at: float | None = None
    _write_failed: bool = False
    # The running build's lock file and where its processes mark what was warned about.
    lock_file: str | None = None
    marks: str | None = None
    _warned: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- reads -------------------------------------------------------------------------
    def get(self, kind: str, key: str) -> bytes | None:
        """The bytes that answer for ``key``, checked against their digest; None: a miss."""
        entry_name = f"ac/{kind}/{key}"
        raw = self._read(entry_name)
        if raw is None:
            self.stats.misses += 1
            return None
        try:
            entry = json.loads(raw)
            blob_digest = str(entry["digest"])
            valid = entry.get("kind") == kind and entry.get("key") == key and is_digest(blob_digest)
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            self.reject(entry_name, "is not an entry for this key")
            return None
        return self.get_blob(blob_digest, entry_name)

    def get_blob(self, blob_digest: str, via: str | None = None) -> bytes | None:
        """The blob named ``blob_digest``, only if its bytes hash to that name."""
        if not is_digest(blob_digest):
            return None
        name = f"cas/{blob_digest}"
        data = self._read(name)
        if data is None:
            self.stats.misses += 1
            return None
        if hashlib.sha256(data).hexdigest() != blob_digest:
            self.reject(name, "does not match its digest" + (f" (named by {via})" if via else ""))
            return None
        self.stats.hits += 1
        self.stats.bytes_down += len(data)
        return data

    # --- writes ------------------------------------------------------------------------
    def put(self, kind: str, key: str, data: bytes) -> bool:
        """Upload ``data`` as the answer for ``key`` when writing is allowed; never overwrite.

        True when this call created the entry.
        """
        if not self.write:
            return False
        blob_digest = self.put_blob(data)
        if blob_digest is None:
            return False
        entry = {"format": ENTRY_FORMAT, "kind": kind, "key": key, "digest": blob_digest}
        entry["size"] = len(data)
        return self._create(f"ac/{kind}/{key}", json.dumps(entry, sort_keys=True).encode()) is True

    def put_blob(self, data: bytes) -> str | None:
        """Upload ``data`` under its digest (when allowed); its digest, None when not written."""
        if not self.write:
            return None
        blob_digest = hashlib.sha256(data).hexdigest()
        if self._create(f"cas/{blob_digest}", data) is None:
            return None
        return blob_digest

    # --- the client --------------------------------------------------------------------
    def _available(self) -> bool:
        failed = self._failed_at
        if failed is None and self._marked(UNREACHABLE, create=False):
            # Another process of this build found it unreachable (and said so).
            self._warned.add(UNREACHABLE)
            failed = self._failed_at = time.monotonic()
        return failed is None or time.monotonic() - failed > RETRY_AFTER

    def _read(self, name: str) -> bytes | None:
        if not self._available():
            return None
        import obstore  # reason: an optional dependency, imported with the cache in use

        try:
            return bytes(obstore.get(self.store, name).bytes())
        except FileNotFoundError:
            return None
        except Exception as err:  # obstore's errors: network, credentials, server
            self._fail(err)
            return None

    def _create(self, name: str, data: bytes) -> bool | None:
        """Put ``data`` at ``name`` unless it exists: True created, False existed, None failed."""
        if not self._available() or self._write_failed:
            return None
        import obstore  # reason: an optional dependency, imported with the cache in use
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self.store, name, data, mode="create")
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as err:
            self._fail(err, writing=True)
            return None
        self.stats.uploads += 1
        self.stats.bytes_up += len(data)
        return True

    def _fail(self, err: Exception, writing: bool = False) -> None:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        with self._lock:
            if writing and _is_permission(err):
                self._write_failed = True  # reading may still work: go on reading
                what = "refuses uploads"
            else:
                self._failed_at = time.monotonic()
                what = UNREACHABLE
            self._warn(what, f"shared cache {self.url} {what} ({reason}); building locally")

    def reject(self, name: str, why: str) -> None:
        """Warn (once) that the object ``name`` is not used, and count it."""
        self.stats.rejected += 1
        with self._lock:
            self._warn(name, f"shared cache {self.url}: {name} {why}; not used, built locally")

    def _warn(self, topic: str, message: str) -> None:
        if topic in self._warned:
            return
        self._warned.add(topic)
        if self._marked(topic, create=True):
            return  # another process of this build warned
        print(f"domarkx: warning: {message}", file=sys.stderr, flush=True)

    def _marked(self, topic: str, create: bool) -> bool:
        """Whether a process of the running build marked ``topic``; ``create``: mark it now.

        Outside a build (no one holds the build lock) nothing is marked.
        """
        build = self._build()
        if build is None or self.marks is None:
            return False
        name = f"{build}-{hashlib.sha256(topic.encode()).hexdigest()[:16]}"
        path = os.path.join(self.marks, name)
        if not create:
            return os.path.exists(path)
        try:
            os.makedirs(self.marks, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return True
        except OSError:
            return False  # a read-only store: each process warns for itself
        for entry in os.listdir(self.marks):  # earlier builds' marks
            if not entry.startswith(build):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.marks, entry))
        return False

    def _build(self) -> str | None:
        """The build holding the lock: its holder's line and when it was written (None: none)."""
        if self.lock_file is None:
            return None
        try:
            with open(self.lock_file, "rb") as handle:
                holder = handle.read()
                written = os.fstat(handle.fileno()).st_mtime_ns
        except OSError:
            return None
        if not holder.strip():
            return None
        return hashlib.sha256(holder + str(written).encode()).hexdigest()[:16]


def is_digest(text: str) -> bool:
    """Whether ``text`` is a whole SHA-256 digest (64 lowercase hex digits)."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _is_permission(err: Exception) -> bool:
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(names & {"PermissionDeniedError", "UnauthenticatedError"})


def write_allowed(settings: CacheSettings) -> bool:
    """``write`` from the file, unless ``DOMARKX_CACHE_WRITE`` says otherwise."""
    value = os.environ.get(WRITE_ENV)
    if value is None:
        return settings.write
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise CacheError(
        f"{WRITE_ENV}={os.environ[WRITE_ENV]!r} is not a yes or a no",
        hint=f"set {WRITE_ENV}=1 or 0",
    )


def open_store(settings: CacheSettings) -> Any:
    """The obstore store for ``settings.url`` (credentials from the environment)."""
    url = settings.url
    assert url is not None
    try:
        # reason: an optional dependency, loaded only when a project names a cache
        from obstore.store import LocalStore, S3Store
    except ImportError:
        raise CacheError(
            "[cache] url needs the obstore package",
            hint="pip install 'domarkx[cache]' (or remove [cache] url from domarkx.toml)",
        ) from None
    if url.startswith("file://"):
        return LocalStore(url[len("file://") :], mkdir=True)
    bucket, _, prefix = url[len("s3://") :].partition("/")
    options: ClientConfig = {"connect_timeout": "5s", "timeout": "60s"}
    kwargs: dict[str, Any] = {}
    if settings.endpoint:
        kwargs["endpoint"] = settings.endpoint
        if settings.endpoint.startswith("http://"):
            options["allow_http"] = True
    if settings.region:
        kwargs["region"] = settings.region
    elif not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        kwargs["region"] = "us-east-1"
    retry: RetryConfig = {
        "max_retries": 2,
        "retry_timeout": timedelta(seconds=10),
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=2),
            "base": 2.0,
        },
    }
    return S3Store(
        bucket,
        prefix=prefix.strip("/") or None,
        client_options=options,
        retry_config=retry,
        **kwargs,
    )


_caches: dict[tuple[str, ...], SharedCache] = {}
_caches_lock = threading.Lock()


def for_project(root: str | os.PathLike[str]) -> SharedCache | None:
    """The shared cache the project at ``root`` names (None: it names none).

    One per configuration per process, so that a failure is warned about once.
    """
    # reason: pydantic and the settings models (~85 ms): a build's task that only checks
    # a snapshot's file or moves a tag opens the store without reading the configuration
    from domarkx import config as project_config

    settings = project_config.load(root).cache
    if settings.url is None:
        return None
    write = write_allowed(settings)
    signature = (settings.url, settings.endpoint or "", settings.region or "", str(write))
    with _caches_lock:
        found = _caches.get(signature)
        if found is None:
            layout = Layout.at(str(root))
            found = SharedCache(
                settings.url,
                open_store(settings),
                write=write,
                lock_file=layout.abs(layout.lock_file),
                marks=layout.abs(layout.shared_cache_marks_dir),
            )
            _caches[signature] = found
    return found


def fetch(
    cache: SharedCache | None,
    kind: str,
    key: str,
    path: str | os.PathLike[str],
    valid: Callable[[bytes], bool] | None = None,
) -> bool:
    """Bring the object that answers for ``key`` into the local file ``path`` (True: done).

    ``valid`` checks what the bytes say of themselves (a record names its own
    key): an object that fails it is a warning and a miss, as a digest mismatch is.
    """
    if cache is None:
        return False
    data = cache.get(kind, key)
    if data is None:
        return False
    if valid is not None and not valid(data):
        cache.reject(f"ac/{kind}/{key}", "names a blob that is not its record")
        return False
    write_atomic(path, data)
    return True


def share(cache: SharedCache | None, kind: str, key: str, data: bytes) -> None:
    """Upload ``data`` for ``key`` when this machine may write to the cache."""
    if cache is not None and cache.write:
        cache.put(kind, key, data)


def current() -> SharedCache | None:
    """The shared cache of the project around the working folder (builds run at the root)."""
    return for_project(find_root())


def forget() -> None:
    """Drop the clients (and their warnings): the next command starts afresh."""
    with _caches_lock:
        _caches.clear()
