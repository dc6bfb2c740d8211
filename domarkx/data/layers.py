"""Where turn layers lie in the store, and how one is written so that it is whole or absent.

A layer is a folder ``layers/<ab>/<key>/`` holding ``layer.json`` (what the
layer is: its message, whether it restores and why not, its size, the
engine's handle of its files, the saved process state, and the outputs of the
blocks up to it) and ``used``, an empty file whose mtime says when a run last
started from it (least recently used goes first when the store is over
``[layers] max_size``). A layer is written in ``layers/_tmp/`` and renamed
into place: a killed save leaves a folder in ``_tmp`` (removed by ``prune``),
never half a layer under its key. The paths are the layout's.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from domarkx.data.layer_files import objects_in
from domarkx.data.layout import Layout

META = "layer.json"
USED = "used"


class LayerStore:
    """The layers of one project's store."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.root = Path(layout.abs(layout.layers_dir))
        self.objects = Path(layout.abs(layout.layer_objects_dir))
        self.tmp = Path(layout.abs(layout.layer_tmp_dir))

    def folder(self, key: str) -> Path:
        return Path(self.layout.abs(self.layout.layer_dir(key)))

    def get(self, key: str) -> dict[str, Any] | None:
        """The layer ``key``'s record, or None (absent, or unreadable: as absent)."""
        try:
            data = json.loads((self.folder(key) / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("key") == key else None

    def exists(self, key: str) -> bool:
        return (self.folder(key) / META).is_file()

    def put(self, key: str, record: dict[str, Any]) -> bool:
        """Write layer ``key`` whole, or not at all; False when it was already there."""
        final = self.folder(key)
        if final.exists():
            return False
        self.tmp.mkdir(parents=True, exist_ok=True)
        work = self.tmp / f"{key[:16]}.{os.getpid()}.{secrets.token_hex(4)}"
        work.mkdir()
        try:
            (work / META).write_text(json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")
            (work / USED).touch()
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(work, final)
        except OSError:
            shutil.rmtree(work, ignore_errors=True)
            if final.exists():
                return False  # another run wrote the same layer meanwhile
            raise
        return True

    def touch(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.folder(key) / USED)

    def last_used(self, key: str) -> float | None:
        try:
            return (self.folder(key) / USED).stat().st_mtime
        except OSError:
            return None

    def all_keys(self) -> list[str]:
        found = []
        with contextlib.suppress(OSError):
            for prefix in os.listdir(self.root):
                if prefix.startswith("_"):
                    continue
                with contextlib.suppress(OSError):
                    found += [k for k in os.listdir(self.root / prefix) if k.startswith(prefix)]
        return sorted(found)

    def remove(self, key: str) -> dict[str, Any] | None:
        """Remove layer ``key``; its record (to forget what it kept elsewhere)."""
        record = self.get(key)
        folder = self.folder(key)
        if folder.exists():
            # Out of sight first (a rename), then deleted: a reader sees it whole or not.
            self.tmp.mkdir(parents=True, exist_ok=True)
            gone = self.tmp / f"gone.{key[:16]}.{secrets.token_hex(4)}"
            with contextlib.suppress(OSError):
                os.rename(folder, gone)
                shutil.rmtree(gone, ignore_errors=True)
        return record

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove what killed saves left in ``_tmp`` (older than ``older_than`` s)."""
        removed = 0
        limit = time.time() - older_than
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.tmp):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < limit:
                        shutil.rmtree(entry.path, ignore_errors=True)
                        removed += 1
        return removed

    def collect_objects(self) -> int:
        """Remove file contents no layer lists any more; how many."""
        used: set[str] = set()
        for key in self.all_keys():
            record = self.get(key)
            if record is not None:
                used |= objects_in((record.get("files") or {}).get("tree") or [])
        removed = 0
        with contextlib.suppress(OSError):
            for prefix in os.scandir(self.objects):
                for entry in os.scandir(prefix.path):
                    if entry.name not in used:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
                            removed += 1
        return removed
