"""Reading the project's configuration file: ``domarkx.toml``, else ``[tool.domarkx]`` of
``pyproject.toml``, at the project root.

A wrong key or type is one ``ConfigError`` naming the file and the line of
the offending key. ``load`` keeps what it read per root and reads again only
when the file itself changed (a long ``domarkx watch`` sees an edit); the
grants of a file the user does not trust are left out, with one note on
stderr per command.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from domarkx.config.paths import CONFIG_FILE, PYPROJECT, user_config_path
from domarkx.config.settings import ProjectConfig
from domarkx.config.toml_lines import key_line
from domarkx.config.trust import is_trusted, settings_digest
from domarkx.errors import DomarkxError

# Where the settings sit inside pyproject.toml.
PYPROJECT_TABLE = ("tool", "domarkx")


class ConfigError(DomarkxError):
    """The project's configuration file is malformed."""


_cache: dict[Path, tuple[tuple[Any, ...], ProjectConfig]] = {}
_lock = threading.Lock()


def load(root: str | os.PathLike[str]) -> ProjectConfig:
    """The configuration of the project at ``root`` (the defaults when it has none)."""
    folder = Path(root)
    signature = _signature(folder)
    with _lock:
        found = _cache.get(folder)
        if found is not None and found[0] == signature:
            return found[1]
    config = _read(folder)
    user = _user()
    if user is not None:  # the user's own grants, for every project; the project's keys win
        config = _merged(user, config, folder)
    if config.digest is not None and config.source is not None:
        limited = config.untrusted(user)  # the project's file narrows, never widens, alone
        if limited.model_dump() != config.model_dump() and not is_trusted(
            config.source, config.digest
        ):
            config = limited
            if config.trust_note():
                _tell_once(config.trust_note())
    with _lock:
        _cache[folder] = (signature, config)
    return config


def _user() -> ProjectConfig | None:
    path = user_config_path()
    text = _text(path)
    if text is None:
        return None
    return _validated(_parse(text, path), path, text, ())


def _merged(user: ProjectConfig, project: ProjectConfig, folder: Path) -> ProjectConfig:
    """The user's settings with the project's file over them, key by key (an endpoint
    is replaced whole: a project cannot send the user's key to another URL by one key)."""
    data = _overlay(user.model_dump(exclude_unset=True), project.model_dump(exclude_unset=True))
    merged = ProjectConfig.model_validate(data)
    return merged.locate(folder, project.source, project.digest)


def _overlay(under: dict[str, Any], over: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    result = dict(under)
    for key, value in over.items():
        below = result.get(key)
        if isinstance(value, dict) and isinstance(below, dict) and (depth, key) != (0, "endpoints"):
            result[key] = _overlay(below, value, depth + 1)
        elif isinstance(value, dict) and isinstance(below, dict):
            result[key] = {**below, **value}  # each endpoint whole
        else:
            result[key] = value
    return result


def read(root: str | os.PathLike[str]) -> ProjectConfig:
    """The configuration at ``root`` as its file says, grants included, trusted or not
    (``domarkx trust`` shows what it accepts); not cached."""
    return _read(Path(root))


def forget() -> None:
    """Drop what was read (each command starts afresh)."""
    with _lock:
        _cache.clear()
        _told.clear()


_told: set[str] = set()


def _tell_once(note: str) -> None:
    """Say ``note`` on stderr once per command (a build reads the file in many threads)."""
    with _lock:
        if note in _told:
            return
        _told.add(note)
    print(f"domarkx: note: {note}", file=sys.stderr, flush=True)


def _signature(folder: Path) -> tuple[Any, ...]:
    parts: list[Any] = []
    for path in (folder / CONFIG_FILE, folder / PYPROJECT, user_config_path()):
        try:
            st = os.stat(path)
        except OSError:
            parts.append(None)
            continue
        parts.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(parts)


def _read(folder: Path) -> ProjectConfig:
    path = folder / CONFIG_FILE
    prefix: tuple[str, ...] = ()
    text = _text(path)
    data: Any = None
    if text is not None:
        data = _parse(text, path)
    else:
        path = folder / PYPROJECT
        text = _text(path)
        if text is None:
            return ProjectConfig().locate(folder)
        data = _parse(text, path)
        for key in PYPROJECT_TABLE:
            data = data.get(key) if isinstance(data, dict) else None
        if data is None:
            return ProjectConfig().locate(folder)
        prefix = PYPROJECT_TABLE
    if not isinstance(data, dict):
        raise ConfigError(
            f"[{'.'.join(prefix)}] must be a table", file=path, line=key_line(text, prefix)
        )
    return _validated(data, path, text, prefix).locate(folder, path, settings_digest(_plain(data)))


def _validated(data: Any, path: Path, text: str, prefix: tuple[str, ...]) -> ProjectConfig:
    """``data`` as settings; a wrong key or value is one ConfigError at its line."""
    try:
        config = ProjectConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(str(part) for part in first["loc"])
        where = ".".join(loc)
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(
            f"{where}: {message}",
            file=path,
            line=key_line(text, prefix + loc),
            hint="the keys are described in docs/security.md (`domarkx init` writes a "
            "commented domarkx.toml)",
        ) from None
    return config


def _plain(data: Any) -> Any:
    """TOML's values as JSON's (dates as their ISO text), for the digest."""
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    if isinstance(data, (str, int, float, bool)) or data is None:
        return data
    return str(data)


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", file=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", file=path) from None


def _parse(text: str, path: Path) -> dict[str, Any]:
    # reason: start-up; tomllib costs ~3.5 ms CPU that a project without a file never pays
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match.group(1)) if match else None
        reason = re.sub(r" \(at line.*", "", message)
        raise ConfigError(
            f"not valid TOML: {reason}",
            file=path,
            line=line,
            hint="see https://toml.io for the syntax",
        ) from None
