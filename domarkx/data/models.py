"""The snapshot and instance models: the JSON contract of spec sections 3 and 4.

A snapshot is immutable and content-addressed; an instance is one run of a
snapshot. Both are plain pydantic models so that their JSON Schema can be
published (``domarkx schema``) and validated on load.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import to_json

from domarkx.data.digest import digest

SNAPSHOT_VERSION = "1.0"
# A Docker memory size (`session-config`'s `memory`): digits, then b, k, m or g.
MEMORY_SIZE = re.compile(r"^[0-9]+\s*[kmg]?b?$", re.IGNORECASE)
ROLES = ("system", "user", "assistant", "tool")
Role = Literal["system", "user", "assistant", "tool"]


class TextBlock(BaseModel):
    """Markdown text kept verbatim (quote markers removed when ``quoted``)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"] = "text"
    value: str = Field(description="The Markdown source of the text, macros expanded.")
    quoted: bool = Field(
        default=False, description="The text was a blockquote (`> ...`); export writes it back so."
    )


class CodeBlock(BaseModel):
    """A fenced code block; ``attrs``/``flags`` come from its info string."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["code"] = "code"
    language: str = Field(default="", description="First word of the info string.")
    name: str | None = Field(default=None, description="The `name=` attribute, if any.")
    code: str = Field(description="The block's text, without the final newline.")
    attrs: dict[str, str] = Field(
        default_factory=dict, description="Other `key=value` attributes of the info string."
    )
    flags: list[str] = Field(
        default_factory=list, description="Bare words of the info string (`run`, `norun`, ...)."
    )


# The output of a code block that was refused: what the export shows, and what the
# model is told. Read back from a document, either text gives ``refused`` back, and
# the block never runs again until the user deletes that output or changes the code.
NOT_RUN = "not run: the user did not approve running this code"
# The same, when the project's configuration refuses all model-written code.
NOT_RUN_BY_CONFIG = (
    'not run: the configuration refuses model-written code on this machine (approve = "never")'
)
NOT_RUN_TEXTS = (NOT_RUN, NOT_RUN_BY_CONFIG)


class OutputBlock(BaseModel):
    """What a code block printed on one stream; follows the code block it belongs to."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["output"] = "output"
    stream: Literal["stdout", "stderr"] = "stdout"
    text: str = Field(default="", description="The captured text.")
    language: str = Field(default="text", description="Info-string language of the output fence.")
    exit_code: int | None = Field(default=None, description="Exit status (on the stdout block).")
    timed_out: bool = Field(default=False, description="The block was killed at its timeout.")
    duration: float | None = Field(
        default=None, description="Seconds the block ran; kept in instances, not exported."
    )
    attrs: dict[str, str] = Field(default_factory=dict)
    refused: bool = Field(
        default=False,
        exclude=True,
        description="The block did not run: it was refused (the text is one of "
        "NOT_RUN_TEXTS). Not written: reading the text back gives it.",
    )

    @model_validator(mode="after")
    def _refused_from_text(self) -> OutputBlock:
        if not self.refused and self.exit_code is None and self.text in NOT_RUN_TEXTS:
            self.refused = self.stream == "stdout"
        return self


ContentBlock = Annotated[TextBlock | CodeBlock | OutputBlock, Field(discriminator="type")]


class Message(BaseModel):
    """One `## role` section of a session."""

    model_config = ConfigDict(extra="forbid")
    role: Role
    message_metadata: dict[str, Any] | None = Field(
        default=None, description="The `msg-metadata` block (tool calls and the like)."
    )
    content: list[ContentBlock] = Field(default_factory=list)

    def with_outputs(self, index: int, outputs: list[OutputBlock]) -> Message:
        """This message with the outputs after block ``index`` replaced by ``outputs``.

        Replacing (not inserting) makes it safe to apply twice: the instance
        journal is replayed over a file that may already hold the outputs.
        """
        content = list(self.content)
        end = index + 1
        while end < len(content) and isinstance(content[end], OutputBlock):
            end += 1
        content[index + 1 : end] = outputs
        return self.model_copy(update={"content": content})


class ModelSettings(BaseModel):
    """LLM settings of `session-config`'s `model` key."""

    model_config = ConfigDict(extra="allow")
    provider: str = Field(default="openai", description="A registered provider name.")
    name: str | None = Field(default=None, description="The model name the server knows.")
    endpoint: str | None = Field(
        default=None,
        description="A server named in the project's configuration (`[endpoints.NAME]`): "
        "its base_url and key.",
    )
    base_url: str | None = None
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable that holds the API key."
    )
    temperature: float | None = None
    max_turns: int = Field(default=4, ge=1, description="Model calls per run at most.")


MAX_TIMEOUT = 7 * 24 * 3600  # a week: more is a typo, and huge values overflow timers


class ExecutionConfig(BaseModel):
    """The `session-config` block. Unknown keys are kept, never dropped."""

    model_config = ConfigDict(extra="allow")
    engine: str = Field(default="local_shell", description="A registered engine name.")
    timeout: float = Field(
        default=60,
        gt=0,
        le=MAX_TIMEOUT,
        allow_inf_nan=False,
        description="Seconds per code block (at most a week).",
    )
    on_error: Literal["continue", "stop"] = Field(
        default="stop", description="What a run does after a block fails or times out."
    )
    workdir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    image: str | None = Field(default=None, description="Docker image (docker engine).")
    network: str = Field(default="none", description="Docker network mode.")
    memory: str | None = Field(default=None, description="Docker memory limit, e.g. `256m`.")
    cpus: float | None = Field(
        default=None, gt=0, le=1024, allow_inf_nan=False, description="Docker CPU limit."
    )
    model: ModelSettings | None = None
    tools: list[str] | None = Field(
        default=None,
        description="Tools offered to the model: `bash`, `python`, or functions of the "
        "Python setup-script (docs/llm.md).",
    )

    @field_validator("timeout", "cpus", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        # YAML's `true` would otherwise be read as 1.
        if isinstance(value, bool):
            raise ValueError("a number, not true or false")
        return value

    @field_validator("engine", "image")
    @classmethod
    def _a_name(cls, value: str | None) -> str | None:
        # An empty name would fail only when the run starts, far from its line.
        if value is not None and not value.strip():
            raise ValueError("empty; name one, or leave the key out for the default")
        return value

    @field_validator("memory")
    @classmethod
    def _a_size(cls, value: str | None) -> str | None:
        # Docker's sizes: a number with b, k, m or g (powers of 1024).
        if value is not None and MEMORY_SIZE.match(value.strip()) is None:
            raise ValueError(f"{value!r} is not a size; write e.g. 256m or 2g")
        return value


class ScriptBlock(BaseModel):
    """The `setup-script` block."""

    model_config = ConfigDict(extra="forbid")
    language: str
    code: str


class SnapshotMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_file: str = Field(description="The document's path, relative to the project root.")
    import_timestamp: str = Field(description="ISO 8601; honours SOURCE_DATE_EPOCH.")
    user_metadata: dict[str, Any] = Field(default_factory=dict, description="The front matter.")


class SessionSnapshot(BaseModel):
    """An imported session: immutable, addressed by the hash of its content."""

    model_config = ConfigDict(extra="forbid")
    version: str = SNAPSHOT_VERSION
    snapshot_id: str = ""
    metadata: SnapshotMetadata
    execution_config: ExecutionConfig | None = None
    config_format: Literal["json", "yaml"] = Field(
        default="yaml", description="How `session-config` was written; export keeps it."
    )
    setup_script: ScriptBlock | None = None
    setup_output: list[OutputBlock] = Field(
        default_factory=list,
        description="What the setup script printed, as the document's output fences after "
        "it say (an export of a run writes them); left out of the JSON when empty.",
    )
    preamble: str | None = Field(default=None, description="Content before the first role.")
    conversation: list[Message] = Field(default_factory=list)

    def config(self) -> ExecutionConfig:
        """The execution settings with defaults filled in."""
        return self.execution_config or ExecutionConfig()

    def _stored(self) -> dict[str, Any]:
        """The snapshot as its file holds it: the config as the user wrote it (only the
        keys that were set), no ``setup_output`` when it is empty."""
        data = self.model_dump(mode="json")
        if self.execution_config is not None:
            data["execution_config"] = dump_config(self.execution_config)
        if not self.setup_output:  # the ids of documents without one stay as they were
            data.pop("setup_output", None)
        return data

    def content_dict(self) -> dict[str, Any]:
        """Everything that defines the snapshot's identity (spec section 3)."""
        return _content(self._stored())

    def compute_id(self) -> str:
        return digest(self.content_dict())

    def with_id(self) -> SessionSnapshot:
        return self.model_copy(update={"snapshot_id": self.compute_id()})

    def to_json(self) -> str:
        return _file_text(self._stored())

    def with_id_and_json(self) -> tuple[SessionSnapshot, str]:
        """``with_id()`` and that snapshot's ``to_json()``, from one dump of the model
        (a cold build needs both for every session)."""
        data = self._stored()
        snapshot_id = digest(_content(data))
        data["snapshot_id"] = snapshot_id  # what the dump of the snapshot with its id holds
        return self.model_copy(update={"snapshot_id": snapshot_id}), _file_text(data)


def _content(stored: dict[str, Any]) -> dict[str, Any]:
    """What of a stored snapshot (``_stored``) defines its identity: not the id itself,
    nor where and when it was imported. ``stored`` is left as it is."""
    content = {key: value for key, value in stored.items() if key != "snapshot_id"}
    content["metadata"] = {
        key: value
        for key, value in stored["metadata"].items()
        if key not in ("import_timestamp", "source_file")
    }
    return content


def _file_text(data: dict[str, Any]) -> str:
    """A snapshot file's text: ``data`` as JSON, indented by two spaces."""
    if _encodes_alike(data):
        # pydantic's encoder (in Rust) writes the same bytes ~10x faster.
        return to_json(data, indent=2).decode("utf-8") + "\n"
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _encodes_alike(data: Any) -> bool:
    """Whether ``pydantic_core.to_json`` writes ``data`` as ``json.dumps`` does.

    They differ only on floats Python writes with an exponent (``1e-05``
    against ``1e-5``) or not at all as numbers (``NaN``, ``Infinity``), and on
    keys that are not strings; anything else is the same text.
    """
    stack = [data]
    pop, push = stack.pop, stack.append
    while stack:
        value = pop()
        kind = type(value)
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str:
                    return False
                push(item)
        elif kind is list:
            stack.extend(value)
        elif kind is float:
            text = repr(value)
            if "e" in text or "n" in text:  # 1e-05, inf, nan
                return False
        elif kind is not str and kind is not int and kind is not bool and value is not None:
            return False
    return True


def dump_config(config: ExecutionConfig) -> dict[str, Any]:
    """The config as the user wrote it: only the keys that were set."""
    return config.model_dump(mode="json", exclude_unset=True)


InstanceStatus = Literal["created", "running", "exited", "failed", "stopped"]


class SessionInstance(BaseModel):
    """One run of a snapshot: its sandbox, status and the conversation as it stands."""

    model_config = ConfigDict(extra="forbid")
    instance_id: str
    snapshot_id: str
    status: InstanceStatus = "created"
    engine: str = "local_shell"
    sandbox: dict[str, Any] = Field(
        default_factory=dict, description="Engine-specific handle: folder, container id."
    )
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = Field(default=None, description="Why the run failed, if it did.")
    setup_output: list[OutputBlock] = Field(
        default_factory=list, description="What the setup script printed."
    )
    conversation: list[Message] = Field(default_factory=list)
    llm_records: list[str] = Field(
        default_factory=list, description="Replay-cache keys of the model calls this run used."
    )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"
