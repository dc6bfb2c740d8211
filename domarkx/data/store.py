"""The store under ``.domarkx/``: snapshots, tags, instances, exports and caches.

Snapshots are content-addressed files (``snapshots/<id>.json``) and never
change once written; everything else is written atomically. References work
as in Docker: a tag, a full id, or a unique prefix of one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from domarkx.data.atomic import write_atomic
from domarkx.errors import RefError, StoreError
from domarkx.pipeline.layout import STORE_DIR, find_root

if TYPE_CHECKING:
    from domarkx.data.models import SessionInstance, SessionSnapshot

# The start of a snapshot file as ``SessionSnapshot.to_json`` writes it, up to the
# metadata object: listing snapshots reads only that object, not the conversation.
_SNAPSHOT_HEAD = re.compile(
    r'\{\s*"version":\s*"[^"\\]*",\s*"snapshot_id":\s*"[0-9a-f]*",\s*"metadata":\s*'
)
_HEAD_BYTES = 4096


def find_project_root(start: Path | None = None) -> Path:
    """The project root (``pipeline.layout.find_root``, the one place that decides it)."""
    return Path(find_root(str(start) if start is not None else None))


@dataclass(frozen=True)
class SnapshotSummary:
    """What ``domarkx snapshots`` shows, read without validating the whole snapshot."""

    snapshot_id: str
    source_file: str
    created: str


class Store:
    """The ``.domarkx/`` folder of one project (``DOMARKX_HOME`` moves it)."""

    def __init__(
        self, home: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
    ) -> None:
        self.home = Path(home)
        self.root = Path(root) if root else self.home.parent

    @classmethod
    def discover(cls, start: Path | None = None) -> Store:
        root = find_project_root(start)
        home = os.environ.get("DOMARKX_HOME")
        return cls(Path(home) if home else root / STORE_DIR, root)

    # Layout -----------------------------------------------------------------
    @property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def tags_dir(self) -> Path:
        return self.home / "tags"

    @property
    def instances_dir(self) -> Path:
        return self.home / "instances"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def replay_dir(self) -> Path:
        return self.home / "replay"

    @property
    def lock_file(self) -> Path:
        """The build lock (``pipeline.lock``); prune takes it too."""
        return self.home / "build.lock"

    @property
    def project_id(self) -> str:
        """The label value that marks this project's sandboxes (``layout.project_id``)."""
        from domarkx.pipeline.layout import project_id

        return project_id(str(self.home))

    def build_snapshot_ids(self) -> set[str]:
        """Snapshot ids the build's caches name (``cache/snapshot/*.id``): in use."""
        found: set[str] = set()
        base = self.cache_dir / "snapshot"
        for path in base.rglob("*.id") if base.is_dir() else ():
            try:
                found.add(path.read_text(encoding="utf-8").split("\n", 1)[0].strip())
            except OSError:
                continue
        return found

    # Snapshots ----------------------------------------------------------------
    def snapshot_path(self, snapshot_id: str) -> Path:
        return self.snapshots_dir / f"{snapshot_id}.json"

    def put_snapshot(self, snapshot: SessionSnapshot) -> Path:
        """Store ``snapshot`` under its id; the same content is the same file."""
        if not snapshot.snapshot_id:
            snapshot = snapshot.with_id()
        path = self.snapshot_path(snapshot.snapshot_id)
        if path.is_file():
            # Immutable, like an image digest: the first import's file (and its
            # timestamp) stays; the same content has nothing new to write.
            return path
        write_atomic(path, snapshot.to_json())
        return path

    def get_snapshot(self, snapshot_id: str) -> SessionSnapshot:
        from domarkx.data.models import SessionSnapshot

        path = self.snapshot_path(snapshot_id)
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
        return self.tags_dir / quote(name, safe="")

    def tag(self, name: str, snapshot_id: str) -> None:
        if not valid_tag(name):
            raise RefError(
                f"invalid tag {name!r}",
                hint="a tag is a name that does not start with '.' and has no control characters",
            )
        write_atomic(self._tag_path(name), snapshot_id + "\n")

    def untag(self, name: str) -> None:
        self._tag_path(name).unlink(missing_ok=True)

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
                    result[unquote(name)] = handle.read().strip()
            except OSError:
                continue
        return result

    def resolve_snapshot(self, ref: str) -> str:
        """The snapshot id that ``ref`` (tag, id or unique id prefix) names."""
        tag_path = self._tag_path(ref)
        if ref and tag_path.is_file():
            return tag_path.read_text(encoding="utf-8").strip()
        return _resolve(ref, self.snapshot_ids(), "snapshot", "domarkx snapshots")

    # Instances ----------------------------------------------------------------
    def instance_dir(self, instance_id: str) -> Path:
        return self.instances_dir / instance_id

    def put_instance(self, instance: SessionInstance) -> None:
        write_atomic(self.instance_dir(instance.instance_id) / "instance.json", instance.to_json())

    def get_instance(self, instance_id: str) -> SessionInstance:
        from domarkx.data.models import SessionInstance

        path = self.instance_dir(instance_id) / "instance.json"
        try:
            return SessionInstance.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise RefError(f"no instance {instance_id[:12]}") from None
        except ValueError as err:
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


def valid_tag(name: str) -> bool:
    """Whether ``name`` can be a tag: a session name may hold spaces (``my notes``).

    A leading ``.`` would be a hidden file of ``tags/`` (``.`` and ``..`` the
    folder itself and its parent); control characters have no place in a name.
    """
    return bool(name) and not name.startswith(".") and all(c.isprintable() for c in name)


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
