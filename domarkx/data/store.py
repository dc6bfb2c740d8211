"""The store under ``.domarkx/``: snapshots, tags, instances, exports and caches.

Snapshots are content-addressed files (``snapshots/<id>.json``) and never
change once written; everything else is written atomically. References work
as in Docker: a tag, a full id, or a unique prefix of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from domarkx.data import remote
from domarkx.data.atomic import append_line, write_atomic
from domarkx.data.layout import Layout, project_id
from domarkx.errors import RefError, StoreError

if TYPE_CHECKING:
    from domarkx.data.models import Message, OutputBlock, SessionInstance, SessionSnapshot

# Blocks run since instance.json was last written whole (see Store.put_instance).
JOURNAL = "journal.jsonl"
_READ_TRIES = 5

# The start of a snapshot file as ``SessionSnapshot.to_json`` writes it, up to the
# metadata object: listing snapshots reads only that object, not the conversation.
_SNAPSHOT_HEAD = re.compile(
    r'\{\s*"version":\s*"[^"\\]*",\s*"snapshot_id":\s*"[0-9a-f]*",\s*"metadata":\s*'
)
_HEAD_BYTES = 4096


@dataclass(frozen=True)
class SnapshotSummary:
    """What ``domarkx snapshots`` shows, read without validating the whole snapshot."""

    snapshot_id: str
    source_file: str
    created: str


class Store:
    """The store of one project; where each thing lies is its ``Layout``'s to say."""

    def __init__(
        self, home: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
    ) -> None:
        root_path = Path(root) if root else Path(home).parent
        # Absolute paths: the store works from any current folder.
        self.layout = Layout(os.path.abspath(root_path), os.path.abspath(home))
        self.home = Path(self.layout.home)
        self.root = root_path

    @classmethod
    def of(cls, layout: Layout) -> Store:
        """The store of ``layout``'s project."""
        return cls(layout.abs(layout.home), layout.root)

    @classmethod
    def discover(cls, start: Path | None = None) -> Store:
        """The store of the project around ``start`` (``DOMARKX_HOME`` moves it)."""
        return cls.of(Layout.discover(str(start) if start is not None else None))

    # Where things are (from the layout) ---------------------------------------------
    def _path(self, relative: str) -> Path:
        return Path(self.layout.abs(relative))

    @property
    def snapshots_dir(self) -> Path:
        return self._path(self.layout.snapshots_dir)

    @property
    def tags_dir(self) -> Path:
        return self._path(self.layout.tags_dir)

    @property
    def instances_dir(self) -> Path:
        return self._path(self.layout.instances_dir)

    @property
    def exports_dir(self) -> Path:
        return self._path(self.layout.exports_dir)

    @property
    def cache_dir(self) -> Path:
        return self._path(self.layout.cache_dir)

    @property
    def replay_dir(self) -> Path:
        return self._path(self.layout.replay_dir)

    @property
    def lock_file(self) -> Path:
        """The build lock (``data.lock``); prune takes it too."""
        return self._path(self.layout.lock_file)

    @property
    def project_id(self) -> str:
        """The label value that marks this project's sandboxes (``layout.project_id``)."""
        return project_id(str(self.home))

    def build_snapshot_ids(self) -> set[str]:
        """Snapshot ids the build's caches name (``cache/snapshot/*.id``): in use."""
        found: set[str] = set()
        base = self._path(self.layout.snapshot_outs_dir)
        for path in base.rglob("*.id") if base.is_dir() else ():
            try:
                found.add(path.read_text(encoding="utf-8").split("\n", 1)[0].strip())
            except OSError:
                continue
        return found

    # Snapshots ----------------------------------------------------------------
    def snapshot_path(self, snapshot_id: str) -> Path:
        return self._path(self.layout.snapshot_file(snapshot_id))

    def put_snapshot(self, snapshot: SessionSnapshot, text: str | None = None) -> Path:
        """Store ``snapshot`` under its id; the same content is the same file.

        ``text``: its ``to_json()``, when the caller has it already.
        """
        if not snapshot.snapshot_id:
            snapshot = snapshot.with_id()
            text = None
        path = self.snapshot_path(snapshot.snapshot_id)
        if path.is_file():
            # Immutable, like an image digest: the first import's file (and its
            # timestamp) stays; the same content has nothing new to write.
            return path
        write_atomic(path, snapshot.to_json() if text is None else text)
        return path

    def get_snapshot(self, snapshot_id: str) -> SessionSnapshot:
        # The pydantic models (~150 ms) are loaded by the first read of a snapshot or
        # instance: listing, tagging and a no-op build do without them.
        from domarkx.data.models import SessionSnapshot

        path = self.snapshot_path(snapshot_id)
        if not path.exists():
            self.fetch_snapshot(snapshot_id)  # made on another machine: the shared cache
        try:
            return SessionSnapshot.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise RefError(f"no snapshot {snapshot_id[:12]}") from None
        except ValueError as err:
            raise StoreError(
                f"snapshot file is damaged: {str(err).splitlines()[0]}",
                file=path,
                hint="delete it and import the session again",
            ) from None

    def snapshot_ids(self) -> list[str]:
        return _names(self.snapshots_dir, ".json")

    def snapshot_summaries(self) -> list[SnapshotSummary]:
        summaries = []
        folder = str(self.snapshots_dir)
        for snapshot_id in self.snapshot_ids():
            meta = _snapshot_metadata(os.path.join(folder, f"{snapshot_id}.json"))
            summaries.append(
                SnapshotSummary(
                    snapshot_id, meta.get("source_file", "?"), meta.get("import_timestamp", "?")
                )
            )
        return summaries

    def remove_snapshot(self, snapshot_id: str) -> None:
        self.snapshot_path(snapshot_id).unlink(missing_ok=True)
        for name, target in self.tags().items():
            if target == snapshot_id:
                self.untag(name)

    # Tags ---------------------------------------------------------------------
    def _tag_path(self, name: str) -> Path:
        return Path(self._tag_file(name))

    def _tag_file(self, name: str) -> str:
        # A plain string: a cold build tags every session (see ``retag``).
        return os.path.join(self.layout.abs(self.layout.tags_dir), tag_file_name(name))

    def tag(self, name: str, snapshot_id: str) -> None:
        if not valid_tag(name):
            raise RefError(
                f"invalid tag {name!r}",
                hint="a tag is a name that does not start with '.' and has no control characters",
            )
        self._write_tag(self._tag_file(name), name, snapshot_id)

    @staticmethod
    def _write_tag(path: str, name: str, snapshot_id: str) -> None:
        # A file name cut short to fit (a long name): the name itself is its second line.
        long_name = LONG_TAG in os.path.basename(path)
        write_atomic(path, snapshot_id + "\n" + (name + "\n" if long_name else ""))

    def untag(self, name: str) -> None:
        self._tag_path(name).unlink(missing_ok=True)

    def retag(self, name: str, snapshot_id: str) -> None:
        """Point tag ``name`` at ``snapshot_id``, unless it does already or cannot be a tag."""
        if not valid_tag(name):
            return
        path = self._tag_file(name)
        if _tag_target(path) != snapshot_id:
            self._write_tag(path, name, snapshot_id)

    def tagged(self, name: str) -> str | None:
        """The snapshot id tag ``name`` points at, or None (without listing every tag)."""
        return _tag_target(self._tag_file(name))

    def tags(self) -> dict[str, str]:
        result = {}
        folder = str(self.tags_dir)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return {}
        for name in names:
            if name.startswith("."):
                continue
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    lines = handle.read().split("\n")
            except OSError:
                continue
            if LONG_TAG in name and len(lines) > 1 and lines[1]:
                result[lines[1]] = lines[0].strip()
            else:
                result[unquote(name)] = lines[0].strip()
        return result

    def resolve_snapshot(self, ref: str) -> str:
        """The snapshot id that ``ref`` (tag, id or unique id prefix) names."""
        tag_path = self._tag_path(ref)
        if ref and tag_path.is_file():
            return _first_line(tag_path.read_text(encoding="utf-8"))
        if remote.is_digest(ref) and self.fetch_snapshot(ref):
            return ref  # a whole id made elsewhere, here now from the shared cache
        return _resolve(ref, self.snapshot_ids(), "snapshot", "domarkx snapshots")

    def fetch_snapshot(self, snapshot_id: str) -> bool:
        """Bring snapshot ``snapshot_id`` from the shared cache (``[cache]``) when it is
        not here; True when it is here now. What the cache gives must hash to that id."""
        path = self.snapshot_path(snapshot_id)
        if path.exists():
            return True
        if not remote.is_digest(snapshot_id):
            return False
        return remote.fetch(
            remote.for_project(self.root),
            "snapshot",
            snapshot_id,
            path,
            valid=lambda data: _snapshot_is(data, snapshot_id),
        )

    def share_snapshot(self, snapshot_id: str) -> None:
        """Upload snapshot ``snapshot_id`` to the shared cache when this machine may write."""
        cache = remote.for_project(self.root)
        if cache is None or not cache.write:
            return
        with contextlib.suppress(OSError):
            remote.share(
                cache, "snapshot", snapshot_id, self.snapshot_path(snapshot_id).read_bytes()
            )

    # Instances ----------------------------------------------------------------
    def instance_dir(self, instance_id: str) -> Path:
        return self._path(self.layout.instance_dir(instance_id))

    # An instance is ``instance.json`` (written whole, atomically) plus
    # ``journal.jsonl``: one line appended per block that ran since, so a long
    # run costs the same per block at block 1,000 as at block 10, and a killed
    # run keeps every block that finished. Writing the whole instance folds the
    # journal in and removes it. Every event replaces (never inserts), so a
    # journal applied over a file that already holds it changes nothing.
    def _journal_path(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / JOURNAL

    def put_instance(self, instance: SessionInstance) -> None:
        folder = self.instance_dir(instance.instance_id)
        write_atomic(folder / "instance.json", instance.to_json())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / JOURNAL)

    def append_outputs(
        self, instance_id: str, message: int, index: int, outputs: list[OutputBlock]
    ) -> None:
        """Record the outputs now after block ``index`` of message ``message``."""
        dumped = [o.model_dump(mode="json") for o in outputs]
        self._append(instance_id, {"outputs": [message, index, dumped]})

    def append_setup_output(self, instance_id: str, outputs: list[OutputBlock]) -> None:
        """Record what the setup script printed."""
        self._append(instance_id, {"setup_output": [o.model_dump(mode="json") for o in outputs]})

    def append_messages(self, instance_id: str, start: int, messages: list[Message]) -> None:
        """Record messages ``start``, ``start + 1``... as they now are (new or changed)."""
        dumped = [m.model_dump(mode="json") for m in messages]
        self._append(instance_id, {"messages": [start, dumped]})

    def _append(self, instance_id: str, event: dict[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
        append_line(self._journal_path(instance_id), line)

    def get_instance(self, instance_id: str) -> SessionInstance:
        from domarkx.data.models import SessionInstance  # see ``get_snapshot``

        path = self.instance_dir(instance_id) / "instance.json"
        try:
            for _ in range(_READ_TRIES):
                with open(path, "rb") as handle:
                    data = handle.read()
                    inode = os.fstat(handle.fileno()).st_ino
                journal = _read_journal(self._journal_path(instance_id))
                # A writer that folded the journal in meanwhile replaced the file:
                # read both again, so that no event is missed.
                if os.stat(path).st_ino == inode:
                    break
            instance = SessionInstance.model_validate_json(data)
            for event in journal:
                _apply(instance, event)
            return instance
        except FileNotFoundError:
            raise RefError(f"no instance {instance_id[:12]}") from None
        except (ValueError, TypeError, LookupError) as err:
            raise StoreError(
                f"instance file is damaged: {str(err).splitlines()[0]}",
                file=path,
                hint=f"remove it with `domarkx rm {instance_id[:12]}`",
            ) from None

    def instance_ids(self) -> list[str]:
        try:
            return sorted(p.parent.name for p in self.instances_dir.glob("*/instance.json"))
        except OSError:
            return []

    def resolve_instance(self, ref: str) -> str:
        return _resolve(ref, self.instance_ids(), "instance", "domarkx instances --all")

    def remove_instance(self, instance_id: str) -> None:
        shutil.rmtree(self.instance_dir(instance_id), ignore_errors=True)

    def keep_instance(self, instance_id: str) -> None:
        """Mark the instance as holding what the user was told to find there (a question,
        a reply): prune leaves it; ``domarkx rm`` still removes it."""
        write_atomic(self._path(self.layout.instance_kept_file(instance_id)), "")

    def instance_kept(self, instance_id: str) -> bool:
        return os.path.isfile(self._path(self.layout.instance_kept_file(instance_id)))


# A tag's file is its name, quoted; a name whose quoted form is longer than this
# (80 CJK characters quote to 720 bytes, past the 255 a file name may have) is cut,
# and LONG_TAG and a digest of the whole name end it (``+`` is never in a quoted name).
TAG_FILE_MAX = 200
LONG_TAG = "+"


def tag_file_name(name: str) -> str:
    """The file name of tag ``name`` in ``tags/``: quoted, at most TAG_FILE_MAX bytes."""
    quoted = quote(name, safe="")
    if len(quoted) <= TAG_FILE_MAX:
        return quoted
    cut = quoted[: TAG_FILE_MAX - 20]
    cut = cut[: cut.rfind("%")] if "%" in cut[-2:] else cut  # not inside a %XX
    return f"{cut}{LONG_TAG}{hashlib.sha256(name.encode('utf-8')).hexdigest()[:16]}"


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def _tag_target(path: str) -> str | None:
    """The snapshot id the tag file ``path`` names, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            return _first_line(handle.read())
    except OSError:
        return None


def valid_tag(name: str) -> bool:
    """Whether ``name`` can be a tag: a session name may hold spaces (``my notes``).

    A leading ``.`` would be a hidden file of ``tags/`` (``.`` and ``..`` the
    folder itself and its parent); control characters have no place in a name.
    """
    return bool(name) and not name.startswith(".") and name.isprintable()


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """The events of an instance journal; a last line cut short by a crash is left out."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    # Every complete event ends with a newline: what follows the last one was
    # being written when the process died, and never counted as done.
    return [json.loads(line) for line in lines[:-1] if line]


def _apply(instance: SessionInstance, event: dict[str, Any]) -> None:
    """Replay one journal event onto ``instance`` (see ``Store.put_instance``)."""
    from domarkx.data.models import Message, OutputBlock  # see ``Store.get_snapshot``

    if "outputs" in event:
        m, index, outputs = event["outputs"]
        blocks = [OutputBlock.model_validate(o) for o in outputs]
        instance.conversation[m] = instance.conversation[m].with_outputs(index, blocks)
    elif "setup_output" in event:
        instance.setup_output = [OutputBlock.model_validate(o) for o in event["setup_output"]]
    elif "messages" in event:
        start, messages = event["messages"]
        for offset, raw in enumerate(messages):
            message = Message.model_validate(raw)
            if start + offset < len(instance.conversation):
                instance.conversation[start + offset] = message
            else:
                instance.conversation.append(message)
    else:
        raise ValueError(f"unknown journal event {sorted(event)}")


def _names(folder: Path, suffix: str) -> list[str]:
    """Sorted names of the ``*suffix`` files in ``folder`` (hidden ones left out)."""
    try:
        with os.scandir(folder) as entries:
            cut = len(suffix)
            return sorted(
                entry.name[:-cut]
                for entry in entries
                if entry.name.endswith(suffix) and not entry.name.startswith(".")
            )
    except OSError:
        return []


def _snapshot_metadata(path: str) -> dict[str, Any]:
    """A snapshot file's ``metadata``, read from the file's head when it is there."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
            match = _SNAPSHOT_HEAD.match(head.decode("utf-8", "replace"))
            if match is not None:
                try:
                    meta, _ = json.JSONDecoder().raw_decode(head.decode("utf-8"), match.end())
                except ValueError:  # cut off by the head's end: read the whole file
                    meta = None
                if isinstance(meta, dict):
                    return meta
            data = json.loads(head + handle.read())
        meta = data.get("metadata", {}) if isinstance(data, dict) else {}
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _resolve(ref: str, ids: list[str], kind: str, listing: str) -> str:
    if not ref:
        raise RefError(f"empty {kind} reference")
    if ref in ids:
        return ref
    matches = [i for i in ids if i.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RefError(f"no {kind} matches {ref!r}", hint=f"`{listing}` lists them")
    shown = ", ".join(m[:12] for m in matches[:5])
    raise RefError(
        f"{ref!r} matches {len(matches)} {kind}s ({shown})",
        hint="give more characters of the id",
    )


def _snapshot_is(data: bytes, snapshot_id: str) -> bool:
    """Whether ``data`` is a snapshot whose content hashes to ``snapshot_id``."""
    # The pydantic models: only for a snapshot fetched from the shared cache.
    from domarkx.data.models import SessionSnapshot

    try:
        snapshot = SessionSnapshot.model_validate_json(data)
    except ValueError:
        return False
    return snapshot.snapshot_id == snapshot_id and snapshot.compute_id() == snapshot_id
