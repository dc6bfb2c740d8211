"""The keys of the project's configuration, what each grants, and what is left of a file the
user does not trust (``ProjectConfig.untrusted``).

Every table of ``domarkx.toml`` is a model here; reading the file is
``domarkx.config.loading``'s job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from domarkx.config.paths import CONFIG_FILE
from domarkx.config.sizes import DEFAULT_EXPANSION, SIZE, size_in_bytes

# Defaults of the Docker sandbox's limits (``[docker]``), chosen to stop a fork
# bomb or a runaway allocation without getting in the way of ordinary blocks.
DEFAULT_PIDS_LIMIT = 512
DEFAULT_MEMORY = "2g"
# The most model calls a session's ``model.max_turns`` may ask for (``[limits] max_turns``).
DEFAULT_MAX_TURNS = 50

# Docker refuses a smaller memory limit; 0 would mean "no limit" to it.
MIN_MEMORY = 6 << 20
# The capabilities a configuration may give back: Docker's default set less NET_RAW
# (raw sockets). Any other (SYS_ADMIN, NET_ADMIN, DAC_READ_SEARCH, SYS_PTRACE, ALL...)
# lets code in the container reach the host's kernel or files; it is refused outright.
SAFE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
_CAPABILITY = re.compile(r"^(CAP_)?[A-Z][A-Z_]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
            if not _CAPABILITY.match(name.upper()):
                raise ValueError(f"{name!r} is not a capability name (e.g. CHOWN)")
            bare = name.upper().removeprefix("CAP_")
            if bare not in SAFE_CAPABILITIES:
                raise ValueError(
                    f"{name!r} is not given back to a sandbox: it would reach past the "
                    f"container (allowed: {', '.join(sorted(SAFE_CAPABILITIES))})"
                )
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not SIZE.match(value.strip()):
            raise ValueError("must be a size such as 512m or 2g")
        if size_in_bytes(value) < MIN_MEMORY:
            raise ValueError("must be at least 6m (Docker reads 0 as no limit at all)")
        return value.strip().lower()


class EngineSettings(BaseModel):
    """Which engines the project's sessions may use."""

    model_config = ConfigDict(extra="forbid")
    allowed: list[str] | None = Field(
        default=None,
        description='The engines a session may name (e.g. `["docker"]`); unset: any.',
    )


class IncludeSettings(BaseModel):
    """Files an include may read although they look like secrets (dotfiles, key files)."""

    model_config = ConfigDict(extra="forbid")
    allow: list[str] = Field(
        default_factory=list,
        description="Paths (globs, relative to the project root) an include may read, "
        'e.g. `[".github/*.yml"]`.',
    )


class LimitSettings(BaseModel):
    """Bounds on what one document may make domarkx produce."""

    model_config = ConfigDict(extra="forbid")
    expansion: str = Field(
        default=DEFAULT_EXPANSION,
        description="The most text macros may produce for one document, e.g. `10m`.",
    )
    max_turns: int = Field(
        default=DEFAULT_MAX_TURNS,
        ge=1,
        description="The most model calls a session's `model.max_turns` may ask for in one run.",
    )

    @field_validator("expansion")
    @classmethod
    def _size(cls, value: str) -> str:
        if not SIZE.match(value.strip()):
            raise ValueError("must be a size such as 512k or 10m")
        return value.strip().lower()


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


class LayerSettings(BaseModel):
    """Turn layers (``[layers]``): see docs/engines.md."""

    model_config = ConfigDict(extra="forbid")
    max_size: str = Field(
        default="2g",
        description="The most space the project's layers take, e.g. `500m`; the least "
        "recently used go first.",
    )

    @field_validator("max_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not SIZE.match(value.strip()):
            raise ValueError("must be a size such as 500m or 2g")
        return value.strip().lower()


class AgentSettings(BaseModel):
    """Sessions that message sessions (``[agents]``): see docs/llm.md, Agents."""

    model_config = ConfigDict(extra="forbid")
    max_depth: int = Field(default=3, ge=1, description="How deep send_message may nest.")
    max_messages: int = Field(
        default=20, ge=1, description="How many messages one command's sessions may send."
    )


# Grants beyond the defaults in other tables: a Docker engine elsewhere (``host``), a
# shared cache whose results a build would take (``[cache]``).
_DOCKER_GRANTS: dict[str, Any] = {"host": None}
_TABLE_GRANTS = ("cache",)


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
    layers: LayerSettings = Field(default_factory=LayerSettings)

    engines: EngineSettings = Field(default_factory=EngineSettings)
    includes: IncludeSettings = Field(default_factory=IncludeSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="The session-config of a new document that `domarkx chat NEW.md -m TEXT` "
        "writes (e.g. `model`, `engine`).",
    )

    # Where the settings were read (None: no configuration, the defaults).
    _source: Path | None = PrivateAttr(default=None)
    _root: Path | None = PrivateAttr(default=None)
    # The grants of an untrusted file that were left out (empty: trusted, or none made).
    _ignored: tuple[str, ...] = PrivateAttr(default=())
    _digest: str | None = PrivateAttr(default=None)

    def locate(
        self, root: Path, source: Path | None = None, digest: str | None = None
    ) -> ProjectConfig:
        """Say where this configuration was read: the project at ``root``, the file
        ``source`` (None: no file, the defaults) whose settings have ``digest``."""
        self._root, self._source, self._digest = root, source, digest
        return self

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def ignored(self) -> tuple[str, ...]:
        """The grants the file makes that are ignored until the user trusts it."""
        return self._ignored

    @property
    def digest(self) -> str | None:
        """The digest ``domarkx trust`` records for the file's settings (None: no file)."""
        return self._digest

    def trust_note(self) -> str:
        """The one line that says what is ignored and how to accept it ('' when nothing is)."""
        if not self._ignored:
            return ""
        return (
            f"{self.describe()} is not trusted, so its grants are ignored "
            f"({'; '.join(self._ignored)}); `domarkx trust` accepts it"
        )

    def grants(self) -> list[str]:
        """What this configuration grants beyond the defaults, one phrase each."""
        found = []
        if self.approve == "auto":
            found.append('approve = "auto"')
        found += [
            f"endpoint {name} ({e.base_url}" + (f", key {e.api_key_env})" if e.api_key_env else ")")
            for name, e in sorted(self.endpoints.items())
        ]
        docker = self.docker
        if docker.networks:
            found.append(f"docker networks {', '.join(docker.networks)}")
        if docker.cap_add:
            found.append(f"docker cap_add {', '.join(docker.cap_add)}")
        if docker.pids_limit > DEFAULT_PIDS_LIMIT:
            found.append(f"docker pids_limit {docker.pids_limit}")
        if size_in_bytes(docker.memory) > size_in_bytes(DEFAULT_MEMORY):
            found.append(f"docker memory {docker.memory}")
        for name, default in _DOCKER_GRANTS.items():
            if name in DockerSettings.model_fields and getattr(docker, name) != default:
                found.append(f"docker {name} {getattr(docker, name)}")
        if self.includes.allow:
            found.append(f"includes of {', '.join(self.includes.allow)}")
        if size_in_bytes(self.limits.expansion) > size_in_bytes(DEFAULT_EXPANSION):
            found.append(f"limits expansion {self.limits.expansion}")
        if self.limits.max_turns > DEFAULT_MAX_TURNS:
            found.append(f"limits max_turns {self.limits.max_turns}")
        for table in _TABLE_GRANTS:
            value = getattr(self, table, None)
            if isinstance(value, BaseModel) and value != type(value)():
                found.append(f"[{table}]")
        return found

    def untrusted(self, base: ProjectConfig | None = None) -> ProjectConfig:
        """This configuration less its grants: what an untrusted file may still say.

        Restrictions stay (``approve = "never"``, ``[engines] allowed``, lower
        limits); grants go back to ``base``: the user's own configuration
        (``user_config``), else the defaults. So an untrusted project keeps what
        the user grants every project, and can only narrow it.
        """
        base = base if base is not None else ProjectConfig()
        docker, own = self.docker, base.docker
        docker_update: dict[str, Any] = {
            "networks": [n for n in docker.networks if n in own.networks],
            "cap_add": [c for c in docker.cap_add if c in own.cap_add],
            "pids_limit": min(docker.pids_limit, own.pids_limit),
            "memory": min(docker.memory, own.memory, key=size_in_bytes),
        }
        for name in _DOCKER_GRANTS:
            if name in DockerSettings.model_fields:
                docker_update[name] = getattr(own, name)
        allowed = self.engines.allowed
        if base.engines.allowed is not None:
            allowed = [e for e in allowed or base.engines.allowed if e in base.engines.allowed]
        rank = ("never", "ask", "auto")
        update: dict[str, Any] = {
            "approve": min(self.approve, base.approve, key=rank.index),
            "endpoints": dict(base.endpoints),
            "docker": docker.model_copy(update=docker_update),
            "engines": self.engines.model_copy(update={"allowed": allowed}),
            "includes": IncludeSettings(
                allow=[a for a in self.includes.allow if a in base.includes.allow]
            ),
            "limits": LimitSettings(
                expansion=min(self.limits.expansion, base.limits.expansion, key=size_in_bytes),
                max_turns=min(self.limits.max_turns, base.limits.max_turns),
            ),
        }
        for table in _TABLE_GRANTS:
            value = getattr(self, table, None)
            if isinstance(value, BaseModel):
                update[table] = getattr(base, table)
        stripped = self.model_copy(update=update)
        stripped._source, stripped._root, stripped._digest = self._source, self._root, self._digest
        mine = set(base.grants())
        stripped._ignored = tuple(g for g in self.grants() if g not in mine)
        return stripped

    def describe(self) -> str:
        """The file to edit, for hints."""
        if self._source is not None:
            return str(self._source)
        return str(self._root / CONFIG_FILE) if self._root is not None else CONFIG_FILE
