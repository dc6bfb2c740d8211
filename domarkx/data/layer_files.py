"""A sandbox's working folder kept in the store, content-addressed (local shell layers).

Each regular file's content is stored once, as ``objects/<ab>/<sha256>`` (read
only; layers that hold the same content share the object), and a layer's
manifest lists ``[path, kind, mode, digest-or-link-target]`` in order. An
object is written to a temporary file and renamed, so a killed save leaves
no half object under its name. Restoring copies objects into a fresh folder
(a copy, not a hard link: the sandbox may write to its files in place, and
that must not change the layer).

A file whose size, mtime and inode are as the last save saw them is not
hashed again, unless its mtime is so recent that a write in the same clock
tick could have gone unseen.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

# A file changed less than this long before a save is hashed again at the next one.
RACY_NS = 50_000_000

Manifest = list[list[Any]]
Hashes = dict[str, tuple[tuple[int, int, int], str]]


def object_path(objects: Path, sha: str) -> Path:
    return objects / sha[:2] / sha


def _store_object(source: Path, objects: Path) -> tuple[str, int]:
    """Copy ``source`` into ``objects`` under its digest; its digest and size."""
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    sha = digest.hexdigest()
    target = object_path(objects, sha)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{sha}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        if hashlib.sha256(tmp.read_bytes()).hexdigest() != sha:
            tmp.unlink()  # the sandbox wrote to it meanwhile: hash it again next time
            raise OSError(f"{source} changed while it was saved")
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    return sha, target.stat().st_size


def save_tree(root: Path, objects: Path, hashes: Hashes) -> tuple[Manifest, int, list[str]]:
    """The manifest of ``root``, its objects stored; (manifest, bytes, reasons not whole)."""
    manifest: Manifest = []
    size = 0
    reasons: list[str] = []
    now = time.time_ns()
    if not root.is_dir():
        return manifest, size, reasons
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(folder)
        for name in sorted(dirs + files):
            path = base / name
            rel = path.relative_to(root).as_posix()
            try:
                info = path.lstat()
            except OSError:
                continue
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                manifest.append([rel, "link", 0, os.readlink(path)])
            elif stat.S_ISDIR(info.st_mode):
                manifest.append([rel, "dir", mode, ""])
            elif stat.S_ISREG(info.st_mode):
                seen = (info.st_size, info.st_mtime_ns, info.st_ino)
                known = hashes.get(rel)
                if known is not None and known[0] == seen:
                    sha = known[1]
                else:
                    try:
                        sha, _ = _store_object(path, objects)
                    except OSError as exc:
                        reasons.append(f"a file could not be saved: {exc}")
                        continue
                    if now - info.st_mtime_ns > RACY_NS:
                        hashes[rel] = (seen, sha)
                manifest.append([rel, "file", mode, sha])
                size += info.st_size
            else:
                reasons.append(f"{rel} is neither a file, a folder nor a link")
    return manifest, size, reasons


def restore_tree(manifest: Manifest, objects: Path, root: Path, hashes: Hashes) -> None:
    """Fill ``root`` (emptied first) with the files of ``manifest``."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    hashes.clear()
    folders: list[tuple[Path, int]] = []
    for rel, kind, mode, value in manifest:
        path = root / rel
        if kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
            folders.append((path, int(mode)))
        elif kind == "link":
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(value, path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(object_path(objects, value), path)
            os.chmod(path, int(mode))
    for path, mode in reversed(folders):  # a read-only folder last, once filled
        with contextlib.suppress(OSError):
            os.chmod(path, mode)


def missing_objects(manifest: Manifest, objects: Path) -> str | None:
    """Why ``manifest`` cannot be restored from ``objects`` (None: every object is there)."""
    for rel, kind, _, value in manifest:
        if kind == "file" and not object_path(objects, value).exists():
            return f"the content of {rel} is no longer in the store"
    return None


def objects_in(manifest: Manifest) -> set[str]:
    return {value for _, kind, _, value in manifest if kind == "file"}
