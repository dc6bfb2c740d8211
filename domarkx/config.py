"""The project's configuration: what the user grants, which a session document can only ask for.

It lives in ``domarkx.toml`` at the project root or, when that file is
absent, in the ``[tool.domarkx]`` table of the root's ``pyproject.toml``
(as ruff reads ``ruff.toml`` before ``pyproject.toml``). A document is
content that can be shared, included or generated; this file is the user's,
so secrets, networks and running model-written code on this machine are
granted here (or on the command line), never by a document.

A wrong key or type is one ``ConfigError`` naming the file and the line of
the offending key. The file is read once per command: ``load`` keeps what it
read per root and reads again only when the file itself changed (a long
``domarkx watch`` sees an edit).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from domarkx.errors import DomarkxError

CONFIG_FILE = "domarkx.toml"
PYPROJECT = "pyproject.toml"
# Where the settings sit inside pyproject.toml.
PYPROJECT_TABLE = ("tool", "domarkx")

# Defaults of the Docker sandbox's limits (``[docker]``), chosen to stop a fork
# bomb or a runaway allocation without getting in the way of ordinary blocks.
DEFAULT_PIDS_LIMIT = 512
DEFAULT_MEMORY = "2g"
# The most text macros may produce for one document (``[limits] expansion``).
DEFAULT_EXPANSION = "10m"

_MEMORY = re.compile(r"^([0-9]+)\s*([kmg]?)b?$", re.IGNORECASE)
_CAPABILITY = re.compile(r"^(CAP_)?[A-Z][A-Z_]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def size_in_bytes(value: str) -> int:
    """``512m`` -> bytes, as Docker reads memory sizes (b, k, m, g, kb, mb, gb; powers of 1024)."""
    match = _MEMORY.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size")
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(match.group(1)) * units[match.group(2).lower()]


class ConfigError(DomarkxError):
    """The project's configuration file is malformed."""


class Endpoint(BaseModel):
    """One model server the user trusts with one API key variable."""

    model_config = ConfigDict(extra="forbid")
    base_url: str = Field(description="The server's chat-completions base URL.")
    api_key_env: str | None = Field(
        default=None, description="The environment variable whose value is sent as the key."
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _variable(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable name")
        return value


class DockerSettings(BaseModel):
    """Limits every Docker sandbox runs with, and the networks sessions may ask for."""

    model_config = ConfigDict(extra="forbid")
    networks: list[str] = Field(
        default_factory=list,
        description="Docker networks a session's `network:` may name (`none` needs no grant).",
    )
    pids_limit: int = Field(
        default=DEFAULT_PIDS_LIMIT, ge=1, description="Processes a container may hold at once."
    )
    memory: str = Field(default=DEFAULT_MEMORY, description="Memory limit, e.g. `512m`, `2g`.")
    cap_add: list[str] = Field(
        default_factory=list,
        description="Capabilities given back after all are dropped (e.g. `CHOWN`).",
    )
    host: str | None = Field(
        default=None,
        description="The Docker engine to run sandboxes on (`ssh://user@host`, `tcp://host:2376`, "
        "`unix:///path`); default: DOCKER_HOST, else the current Docker context.",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ssh://", "tcp://", "unix://", "npipe://")):
            raise ValueError("must start with ssh://, tcp://, unix:// or npipe://")
        return value

    @field_validator("cap_add")
    @classmethod
    def _capabilities(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _CAPABILITY.match(name):
                raise ValueError(f"{name!r} is not a capability name (e.g. CHOWN)")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY.match(value.strip()):
            raise ValueError("must be a size such as 512m or 2g")
        return value.strip().lower()


class LimitSettings(BaseModel):
    """Bounds on what one document may make domarkx produce."""

    model_config = ConfigDict(extra="forbid")
    expansion: str = Field(
        default=DEFAULT_EXPANSION,
        description="The most text macros may produce for one document, e.g. `10m`.",
    )

    @field_validator("expansion")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _MEMORY.match(value.strip()):
            raise ValueError("must be a size such as 512k or 10m")
        return value.strip().lower()


class IncludeSettings(BaseModel):
    """Files an include may read although they look like secrets (dotfiles, key files)."""

    model_config = ConfigDict(extra="forbid")
    allow: list[str] = Field(
        default_factory=list,
        description="Paths (globs, relative to the project root) an include may read, "
        'e.g. `[".github/*.yml"]`.',
    )


class CacheSettings(BaseModel):
    """A cache shared between machines (``[cache]``): see docs/scale.md."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(
        default=None, description="`s3://bucket/prefix` or `file:///absolute/path`."
    )
    endpoint: str | None = Field(
        default=None, description="An S3-compatible server's URL (MinIO, R2, Ceph, a test server)."
    )
    region: str | None = Field(
        default=None, description="The bucket's region (default: AWS_REGION)."
    )
    write: bool = Field(
        default=False,
        description="Upload what this machine builds (DOMARKX_CACHE_WRITE=1 does too): "
        "only for trusted machines.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith("s3://"):
            bucket = value[5:].split("/", 1)[0]
            if not bucket or "@" in bucket or ":" in bucket:
                raise ValueError(
                    "must be s3://bucket/prefix (credentials go in AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, never in the file)"
                )
        elif not value.startswith("file:///"):
            raise ValueError("must start with s3:// or file:/// (an absolute path)")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.startswith(("http://", "https://")):
                raise ValueError("must start with http:// or https://")
            if "@" in value.split("/", 3)[2]:
                raise ValueError("must not hold credentials (use AWS_ACCESS_KEY_ID ...)")
        return value


class ChecksSettings(BaseModel):
    """How ``judge`` checks grade (``[checks]``): see docs/checks.md."""

    model_config = ConfigDict(extra="forbid")
    judge_endpoint: str | None = Field(
        default=None, description="The endpoint (`[endpoints.NAME]`) a judge check uses by default."
    )
    judge_model: str | None = Field(
        default=None, description="The model name a judge check asks by default."
    )
    judge_prompt: str | None = Field(
        default=None,
        description="The judge's system prompt, in place of domarkx's; it must ask for a JSON "
        'object {"pass": true|false, "reason": "..."}.',
    )


class ProjectConfig(BaseModel):
    """``domarkx.toml`` (or ``[tool.domarkx]``): the user's grants for this project."""

    model_config = ConfigDict(extra="forbid")
    approve: Literal["ask", "auto", "never"] = Field(
        default="ask",
        description="Model-written code on this machine (local_shell): ask on a terminal, "
        "run it all, or run none.",
    )
    endpoints: dict[str, Endpoint] = Field(
        default_factory=dict, description="Model servers, by name, and the key each may get."
    )
    docker: DockerSettings = Field(default_factory=DockerSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    checks: ChecksSettings = Field(default_factory=ChecksSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    includes: IncludeSettings = Field(default_factory=IncludeSettings)

    # Where the settings were read (None: no configuration, the defaults).
    _source: Path | None = PrivateAttr(default=None)
    _root: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source

    def describe(self) -> str:
        """The file to edit, for hints."""
        if self._source is not None:
            return str(self._source)
        return str(self._root / CONFIG_FILE) if self._root is not None else CONFIG_FILE


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
    config._root = folder
    with _lock:
        _cache[folder] = (signature, config)
    return config


def forget() -> None:
    """Drop what was read (each command starts afresh)."""
    with _lock:
        _cache.clear()


def _signature(folder: Path) -> tuple[Any, ...]:
    parts: list[Any] = []
    for name in (CONFIG_FILE, PYPROJECT):
        try:
            st = os.stat(folder / name)
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
            return ProjectConfig()
        data = _parse(text, path)
        for key in PYPROJECT_TABLE:
            data = data.get(key) if isinstance(data, dict) else None
        if data is None:
            return ProjectConfig()
        prefix = PYPROJECT_TABLE
    if not isinstance(data, dict):
        raise ConfigError(
            f"[{'.'.join(prefix)}] must be a table", file=path, line=key_line(text, prefix)
        )
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
    config._source = path
    return config


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


# --- where a key is written --------------------------------------------------------------

_TABLE = re.compile(r"^\s*\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"^\s*(?P<key>(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'", text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def key_line(text: str, path: tuple[str, ...]) -> int | None:
    """The 1-based line that sets the key at ``path`` (or its nearest written parent).

    tomllib keeps no positions, so the lines are scanned: table headers and
    ``key = value`` lines (dotted keys included), skipping multi-line strings.
    A key that is missing (a required one) gives the line of its table.
    """
    best: tuple[int, int] | None = None  # (matched length, line)
    table: tuple[str, ...] = ()
    in_string: str | None = None
    for number, line in enumerate(text.split("\n"), 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        header = _TABLE.match(line)
        if header is not None:
            table = _split_key(header.group("name"))
            full = table
        else:
            key = _KEY.match(line)
            if key is None:
                continue
            full = table + _split_key(key.group("key"))
            rest = line[key.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
        matched = 0
        while matched < min(len(full), len(path)) and full[matched] == path[matched]:
            matched += 1
        if matched == len(full) and (best is None or matched > best[0]):
            best = (matched, number)
    return best[1] if best is not None and best[0] > 0 else None
