"""The Engine interface: a sandbox that runs code blocks and keeps state between them.

An engine instance is one sandbox for one session instance. It is started
once, runs blocks in order (each language in its own persistent process, so
variables, functions and the working directory persist as in a notebook
kernel), and is stopped once. Engines are found through the
``domarkx.engines`` registry; a third-party engine subclasses ``Engine`` and
registers an entry point.
"""

from __future__ import annotations

import abc
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from domarkx import registry
from domarkx.data.models import NOT_RUN, ExecutionConfig
from domarkx.errors import EngineError

if TYPE_CHECKING:
    from domarkx.config import ProjectConfig

GROUP = "domarkx.engines"

# Info-string languages and the interpreter that runs them.
LANGUAGE_ALIASES: dict[str, str] = {
    "bash": "bash",
    "sh": "bash",
    "shell": "bash",
    "console": "bash",
    "python": "python",
    "python3": "python",
    "py": "python",
}

# Docker label put on every container domarkx creates, so prune finds leftovers.
SANDBOX_LABEL = "io.domarkx.sandbox"
# Label naming the instance that owns a sandbox; prune keeps those still running.
INSTANCE_LABEL = "io.domarkx.instance"
# Label naming the project (``layout.project_id`` of its store) that started a sandbox:
# prune, stop and rm act only on their own project's sandboxes.
PROJECT_LABEL = "io.domarkx.project"
# Label of an image that holds a turn layer's files (with PROJECT_LABEL).
LAYER_LABEL = "io.domarkx.layer"


def canonical_language(language: str) -> str | None:
    """``bash`` or ``python`` for a runnable info-string language, else None."""
    return LANGUAGE_ALIASES.get(language.strip().lower())


def block_language(engine: str, language: str) -> str:
    """The canonical language of a block ``engine`` is asked to run; an error for any other."""
    lang = canonical_language(language)
    if lang is None:
        raise EngineError(
            f"the {engine} engine cannot run {language!r} blocks",
            hint="use bash, sh, shell or python, or mark the block `norun`",
        )
    return lang


@dataclass(frozen=True)
class Refusal:
    """A setting a session asks for and the user has not granted."""

    key: str  # the session-config key, to name its line
    message: str
    hint: str


@dataclass
class BlockResult:
    """What one block did: its streams kept apart, its exit status, its time."""

    stdout: str
    stderr: str
    exit_code: int | None
    duration: float
    timed_out: bool = False
    # The block did not run because the user refused it (``not_run``); nothing was started.
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.refused

    @classmethod
    def not_run(cls, why: str = NOT_RUN) -> BlockResult:
        """The result of a refused block: no exit status, its text (``NOT_RUN_TEXTS``) says why."""
        return cls(stdout=why, stderr="", exit_code=None, duration=0.0, refused=True)


class Engine(abc.ABC):
    """One sandbox. Subclasses set ``name`` and implement the abstract methods."""

    name: ClassVar[str] = ""
    # Whether the sandbox keeps model-written code away from the user's machine; code
    # runs there without asking (domarkx.session.approval). Plugins must opt in.
    isolated: ClassVar[bool] = False

    def __init__(
        self, config: ExecutionConfig, workdir: Path, labels: dict[str, str] | None = None
    ) -> None:
        # ``workdir`` is the instance's own folder on the host; the sandbox works there
        # (local shell) or mounts nothing and uses config.workdir (docker).
        self.config = config
        self.workdir = Path(workdir)
        self.labels = dict(labels or {})
        # What the user grants (domarkx.toml); the defaults until the caller sets it,
        # so an engine made without a project is as strict as one with an empty file.
        self.project: ProjectConfig | None = None

    @classmethod
    def refusal(cls, config: ExecutionConfig, project: ProjectConfig) -> Refusal | None:
        """What ``config`` asks for that ``project`` does not grant (None: nothing).

        Checked before a sandbox is made, so the error can name the session-config line.
        Subclasses that refuse more call this first: it checks ``[engines] allowed``.
        """
        allowed = project.engines.allowed
        if allowed is None or cls.name in allowed:
            return None
        return Refusal(
            "engine",
            f"session-config asks for the {cls.name} engine, and the project allows only "
            f"{', '.join(allowed) or 'none'}",
            f"set `engine: {allowed[0]}` in session-config"
            if allowed
            else f"see [engines] in {project.describe()}",
        )

    @abc.abstractmethod
    def start(self) -> dict[str, Any]:
        """Create the sandbox; return a JSON-able handle recorded in the instance."""

    @abc.abstractmethod
    def run(self, language: str, code: str, timeout: float) -> BlockResult:
        """Run one block in the sandbox's persistent process for ``language``.

        A block that outlives ``timeout`` is killed (with every process it
        started) and reported with ``timed_out=True``; the sandbox stays usable.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Destroy the sandbox and everything it started. Safe to call twice."""

    # Layers (domarkx.session.layers): an engine that can save its sandbox after a
    # message and start a new sandbox from what it saved sets this and implements
    # the methods below; for any other engine every run starts from scratch.
    layers_supported: ClassVar[bool] = False

    def run_internal(
        self, language: str, code: str, timeout: float, count: int | None = None
    ) -> BlockResult:
        """Run domarkx's own block (saving or restoring state): not one of the session's.

        ``count`` (Python) sets how many of the session's blocks ran before the next one.
        """
        raise NotImplementedError

    def state_root(self) -> str | None:
        """The sandbox's folder where each sandbox has its own (None: the same in all)."""
        return None

    def live_languages(self) -> list[str]:
        """The languages whose persistent process is running now."""
        return []

    def python_blocks(self) -> int:
        """How many of the session's blocks the running Python process has run."""
        return 0

    def background_processes(self) -> list[str]:
        """Why the sandbox cannot be saved whole: processes left running (empty: none)."""
        return []

    def save_files(self, objects: Path) -> tuple[dict[str, Any], int, list[str]]:
        """Keep the sandbox's files: a JSON-able handle, its size in bytes, and the
        reasons it is not whole (empty: whole). ``objects``: where a content-addressed
        copy may go."""
        raise NotImplementedError

    def use_files(self, files: dict[str, Any], objects: Path) -> None:
        """Before ``start``: the sandbox starts with the files ``save_files`` kept."""
        raise NotImplementedError

    @classmethod
    def files_missing(cls, files: dict[str, Any], objects: Path) -> str | None:
        """Why the files ``save_files`` kept are gone (None: they are there)."""
        return None

    @classmethod
    def forget_files(cls, files: dict[str, Any], host: str | None = None) -> None:
        """Remove what ``save_files`` kept outside ``objects`` (a committed image)."""
        return None

    @classmethod
    def prune_layers(cls, keep: Container[str], project: str, host: str | None = None) -> list[str]:
        """Remove ``project``'s layer files kept outside the store that no layer holds
        (``keep``: every layer's ``save_files`` handles), as a save killed before its
        record was written leaves them; return what went. Another project's are never
        touched."""
        return []

    @classmethod
    def supports(cls, language: str) -> bool:
        """Whether this engine can run blocks of ``language`` (an info-string word).

        A class method: the run checks every block before it creates a sandbox.
        """
        return canonical_language(language) is not None

    @classmethod
    def destroy(cls, handle: dict[str, Any]) -> None:
        """Destroy a sandbox from its recorded handle (``domarkx stop`` in another process)."""
        return None

    @classmethod
    def prune(cls, keep: Container[str] = frozenset(), project: str | None = None) -> list[str]:
        """Remove ``project``'s sandboxes whose instance is not in ``keep``; return them.

        Only sandboxes labelled with ``project`` (``PROJECT_LABEL``) are candidates:
        another project's sandboxes, running or not, are never touched.
        """
        return []

    @classmethod
    def prune_project(
        cls, keep: Container[str], project: str, settings: ProjectConfig
    ) -> list[str]:
        """``prune`` for the project whose configuration is ``settings``.

        An engine whose sandboxes may run elsewhere (``[docker] host``) looks there.
        """
        return cls.prune(keep=keep, project=project)

    @classmethod
    def settings_key(cls, config: ExecutionConfig) -> dict[str, Any]:
        """The settings that can change what blocks print (part of the run cache key)."""
        return {
            "engine": cls.name,
            "env": dict(sorted(config.env.items())),
            "workdir": config.workdir,
            "image": config.image,
            "network": config.network,
        }

    @classmethod
    def layer_settings(cls, config: ExecutionConfig) -> dict[str, Any]:
        """The settings a sandbox's state depends on (part of layer 0's key)."""
        return {
            **cls.settings_key(config),
            "memory": config.memory,
            "cpus": config.cpus,
            "timeout": config.timeout,
        }

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def engine_class(name: str) -> type[Engine]:
    """The engine registered as ``name`` (the registry reports unknown or broken ones)."""
    cls: type[Engine] = registry.load(GROUP, name)
    return cls
