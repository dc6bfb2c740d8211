"""Which projects' configuration files the user trusts, kept in the user's own configuration.

A repository ships its ``domarkx.toml`` with its documents, so a grant in it
is the repository asking, not the user granting (tools-chat-trust spec,
section 3.1). As ``direnv allow`` does, ``domarkx trust`` records the file's
real path and the digest of its settings in
``$XDG_CONFIG_HOME/domarkx/trusted.toml`` (``~/.config`` when the variable is
unset); a file whose settings changed since is untrusted again.
``DOMARKX_TRUST=1`` trusts the checkout for one command (the repository's own
CI).

It reads and writes one small TOML file with the standard library, and knows
nothing of sessions: ``domarkx.config.loading`` asks it about a project's file,
``domarkx trust`` records one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domarkx.config.paths import user_config_dir

ENV = "DOMARKX_TRUST"
FILE_NAME = "trusted.toml"


class TrustFileError(Exception):
    """The user's record of trusted files cannot be read or written (``message`` says why)."""


def settings_digest(settings: Any) -> str:
    """SHA-256 of the settings' canonical JSON: comments and spacing may change freely."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def from_env() -> bool:
    """Whether ``DOMARKX_TRUST`` trusts every project for this command (1, true, yes)."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes")


def record_path() -> Path:
    return user_config_dir() / FILE_NAME


@dataclass(frozen=True)
class Entry:
    path: str  # the configuration file's real path
    digest: str  # settings_digest of what it held when trusted


def entries() -> list[Entry]:
    """The trusted files as recorded (none when the record does not exist)."""
    # reason: start-up; tomllib costs ~3.5 ms CPU, and only a file with grants asks
    import tomllib

    path = record_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as err:
        raise TrustFileError(f"{path}: cannot read: {err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TrustFileError(f"{path}: not valid TOML: {err}") from None
    found = []
    for item in data.get("trusted", []) if isinstance(data, dict) else []:
        if isinstance(item, dict):
            where, digest = item.get("path"), item.get("sha256")
            if isinstance(where, str) and isinstance(digest, str):
                found.append(Entry(where, digest))
    return found


def is_trusted(config_file: Path, digest: str) -> bool:
    """Whether the user trusts ``config_file`` as it is now (or ``DOMARKX_TRUST`` says so)."""
    if from_env():
        return True
    real = os.path.realpath(config_file)
    try:
        return any(e.path == real and e.digest == digest for e in entries())
    except TrustFileError:
        return False  # an unreadable record trusts nothing; `domarkx trust` reports it


def set_trust(config_file: Path, digest: str | None) -> Path:
    """Record ``config_file`` as trusted with ``digest`` (None: forget it); the record's path."""
    real = os.path.realpath(config_file)
    kept = [e for e in entries() if e.path != real]
    if digest is not None:
        kept.append(Entry(real, digest))
    lines = [
        "# Projects whose domarkx.toml (or [tool.domarkx]) you trust: written by `domarkx trust`.",
        "# A file whose settings changed since is not trusted until you run it again.",
    ]
    for entry in sorted(kept, key=lambda e: e.path):
        # JSON strings with ASCII escapes are TOML basic strings.
        lines += [
            "",
            "[[trusted]]",
            f"path = {json.dumps(entry.path)}",
            f"sha256 = {json.dumps(entry.digest)}",
        ]
    path = record_path()
    try:
        _write(path, "\n".join(lines) + "\n")
    except OSError as err:
        raise TrustFileError(f"{path}: cannot write: {err.strerror or err}") from None
    return path


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole (a temporary file beside it, then a rename), mode 600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
