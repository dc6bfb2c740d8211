"""Where a project is: its root, its store, which files are sessions, the cache paths.

The one place that decides these (the ``domarkx`` commands, the store, the
build and the tests all ask it): the root is the nearest folder holding
``dodo.py``, ``sessions/`` or ``.domarkx/``; the store is ``.domarkx/``
there (``DOMARKX_HOME`` moves it); the sessions are ``sessions/**/*.md``
less partials (``_*``) and hidden files.

Loaded by every ``doit`` run, so it imports only the standard library and
works at stat level. Paths handed to doit are relative to the project root
(doit runs there), which keeps ``doit info`` readable; stage functions join
them with ``root``, so they work from any current folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

from domarkx import __version__
from domarkx.data.digest import canonical_json, digest

STORE_DIR = ".domarkx"
SESSIONS_DIR = "sessions"
# sessions/templates/: what the session tools' create_session copies; no session itself.
TEMPLATES_DIR = "templates"
PROJECT_MARKERS = ("dodo.py", SESSIONS_DIR, STORE_DIR)
HOME_ENV = "DOMARKX_HOME"
SESSION_SUFFIX = ".md"
STAGES = ("parse", "expand", "snapshot", "run", "export")

# What the stages' caches were made by: the domarkx version, and the format of the
# cache files (bumped whenever a stage's output changes shape). The stages' outputs
# live in a folder named by it (``build_caches``): another version's are other
# files, which doit sees missing, so it re-runs every stage, with no file of the
# version listed in 5,000 tasks' dependencies.
CACHE_FORMAT = 3
BUILD_VERSION = f"{__version__} cache-{CACHE_FORMAT}"
BUILD_CACHES = f"cache/v{__version__}-{CACHE_FORMAT}"
# Where the stages' outputs were before they moved to BUILD_CACHES.
OLD_STAGE_FOLDERS = ("parse", "expand", "deps", "replay-deps", "params", "snapshot")
# The most bytes a file name may have (ext4, XFS, Btrfs, APFS). A session's name is a
# file name less ``.md``, so its cache files (``.json``, ``.asks``...) can pass it: 84 CJK
# characters are 252 bytes. Such a name's last part is cut to CUT_NAME bytes (whole
# characters) and LONG_NAME and a digest of the whole name end it (``cache_name``).
NAME_MAX = 255
CUT_NAME = 200
LONG_NAME = "+"
# A name of at most this many characters fits whatever its characters (4 bytes at most each).
SHORT_NAME = (NAME_MAX - len(".json")) // 4


def check_store_inside(root: str) -> None:
    """A ``.domarkx/`` (or a folder in it) that links outside ``root`` is refused.

    A checkout could ship ``.domarkx -> ~/`` or ``.domarkx/exports -> ~/.config``
    and have builds write there. ``DOMARKX_HOME`` is the way to put the store
    elsewhere; a link is followed only while it stays inside the project.
    """
    store = os.path.join(root, STORE_DIR)
    if not os.path.lexists(store):
        return
    real_root = os.path.realpath(root)
    paths = [store]
    with contextlib.suppress(OSError):
        paths += [os.path.join(store, name) for name in os.listdir(store)]
    for path in paths:
        if os.path.islink(path) and not _inside(os.path.realpath(path), real_root):
            from domarkx.errors import StoreError  # only to refuse (doit loads this module)

            raise StoreError(
                f"{path} is a link to {os.path.realpath(path)}, outside the project: "
                "domarkx would write there",
                hint=f"remove the link (a store elsewhere is set with {HOME_ENV})",
            )


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def cache_name(name: str, suffix: str) -> str:
    """``name + suffix``, the path of session ``name``'s file in a cache folder.

    Unchanged while its last part fits in a file name (every name of up to
    SHORT_NAME characters does); else that part is cut and ends with LONG_NAME
    and a digest of the whole name, so that it fits and stays the name's own.
    """
    if len(name) <= SHORT_NAME:
        return name + suffix
    head, slash, last = name.rpartition("/")
    encoded = last.encode("utf-8", "surrogateescape")
    if len(encoded) + len(suffix.encode("utf-8")) <= NAME_MAX:
        return name + suffix
    cut = encoded[:CUT_NAME].decode("utf-8", "ignore")
    mark = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{head}{slash}{cut}{LONG_NAME}{mark}{suffix}"


def find_root(start: str | None = None) -> str:
    """The nearest folder (from ``start`` up) holding dodo.py, sessions/ or .domarkx/."""
    here = os.path.abspath(start or os.getcwd())
    folder = here
    # The user's home folder is a project only when a command starts there: a `~/.domarkx`
    # left by one such command must not make every loose document below ~ part of a
    # project whose files (~/.ssh, ~/.aws) it could then include.
    user_home = os.path.expanduser("~")
    while True:
        markers = folder != user_home or folder == here
        if markers and any(os.path.exists(os.path.join(folder, m)) for m in PROJECT_MARKERS):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return here
        folder = parent


def project_id(home: str) -> str:
    """A short, stable id of the project whose store is ``home`` (its real path, hashed).

    Sandboxes carry it as a label, so that cleaning up one project never
    touches what another project (another store) started.
    """
    real = os.path.realpath(home)
    return hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class Layout:
    """One project's paths. ``home`` is relative to ``root`` unless it lies outside it.

    A plain class rather than a dataclass: doit imports this module on every
    run, and generating a dataclass's methods costs more than the rest of it.
    """

    __slots__ = ("home", "root")

    def __init__(self, root: str, home: str = STORE_DIR) -> None:
        self.root = root
        self.home = home

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and (self.root, self.home) == (other.root, other.home)

    def __hash__(self) -> int:
        return hash((self.root, self.home))

    def __repr__(self) -> str:
        return f"Layout({self.root!r}, {self.home!r})"

    @classmethod
    def at(cls, root: str | None = None) -> Layout:
        """The layout of the project at ``root`` (default: the current folder).

        The one reader of ``DOMARKX_HOME``, which moves the store.
        """
        root = os.path.abspath(root or os.getcwd())
        env = os.environ.get(HOME_ENV)
        if not env:
            check_store_inside(root)
            return cls(root)
        home = os.path.abspath(env)
        relative = os.path.relpath(home, root)
        if not relative.startswith(".."):
            home = relative.replace(os.sep, "/")
        return cls(root, home)

    @classmethod
    def discover(cls, start: str | None = None) -> Layout:
        """The layout of the project around ``start`` (default: the current folder)."""
        return cls.at(find_root(start))

    def abs(self, relative: str) -> str:
        """An absolute path for a path of this layout."""
        return os.path.join(self.root, relative)

    # Inputs -------------------------------------------------------------------
    def source(self, name: str) -> str:
        return f"{SESSIONS_DIR}/{name}.md"

    # Outputs, one per stage ------------------------------------------------------
    def parse_out(self, name: str) -> str:
        return f"{self.home}/{BUILD_CACHES}/parse/{cache_name(name, '.json')}"

    def expand_out(self, name: str) -> str:
        return f"{self.home}/{BUILD_CACHES}/expand/{cache_name(name, '.json')}"

    def deps_file(self, name: str) -> str:
        """Files the session included, as the last expand found them (absent: none)."""
        return f"{self.home}/{BUILD_CACHES}/deps/{cache_name(name, '.json')}"

    def replay_deps_file(self, name: str) -> str:
        """Replay records the session's last run used (absent: none), see ``tasks``."""
        return f"{self.home}/{BUILD_CACHES}/replay-deps/{cache_name(name, '.json')}"

    def model_marker(self, name: str) -> str:
        """An empty file for each session whose session-config names a model."""
        return f"{self.home}/cache/model/{cache_name(name, '.asks')}"

    def marked_model_sessions(self) -> list[str] | None:
        """The sessions marked as naming a model, or None when nothing was ever marked."""
        if not os.path.isdir(self.abs(f"{self.home}/cache/model")):
            return None
        return self.cached_names("cache/model", ".asks")

    def params_file(self, name: str) -> str:
        """Parameter names the session's last expand looked up (absent: none), see ``tasks``."""
        return f"{self.home}/{BUILD_CACHES}/params/{cache_name(name, '.json')}"

    def replay_record(self, key: str) -> str:
        return f"{self.home}/replay/{key[:2]}/{key}.json"

    def snapshot_out(self, name: str) -> str:
        return f"{self.snapshot_outs_dir}/{cache_name(name, '.id')}"

    def run_out(self, name: str) -> str:
        return f"{self.home}/{BUILD_CACHES}/run/{cache_name(name, '.json')}"

    def run_record(self, key: str) -> str:
        """The execution cache's record of run key ``key``.

        Beside the run stage's outputs, in a ``_`` folder no session name can
        reach (names never start with ``_``).
        """
        return f"{self.home}/cache/run/_keys/{key}.json"

    def export_out(self, name: str) -> str:
        return f"{self.home}/exports/{name}.md"

    def seconds_file(self, name: str) -> str:
        """How long the session's run took where it ran (``pipeline.durations``)."""
        return f"{self.home}/cache/seconds/{cache_name(name, '.txt')}"

    @property
    def shared_cache_marks_dir(self) -> str:
        """What the shared cache warned about in the running build, seen by all its processes."""
        return f"{self.home}/cache/shared-cache-warned"

    def old_build_caches(self) -> list[str]:
        """Stage outputs of other domarkx versions (``BUILD_CACHES``), which a build removes.

        Absolute paths: other ``cache/v*`` folders, and the stage folders of the
        layout before them (``cache/parse`` ... ``cache/run/<name>.json``; the
        execution cache, ``cache/run/_keys``, stays).
        """
        cache = self.abs(f"{self.home}/cache")
        try:
            entries = os.listdir(cache)
        except OSError:
            return []
        current = BUILD_CACHES.rpartition("/")[2]
        old = [
            os.path.join(cache, entry)
            for entry in entries
            if (entry.startswith("v") and entry != current) or entry in OLD_STAGE_FOLDERS
        ]
        if "run" in entries:
            with contextlib.suppress(OSError):
                run = os.path.join(cache, "run")
                old += [os.path.join(run, e) for e in os.listdir(run) if e != "_keys"]
        return old

    @property
    def durations_file(self) -> str:
        """The sessions' recorded durations that balance shards; committed, like the exports."""
        return f"{self.home}/durations.json"

    @property
    def dep_file(self) -> str:
        """doit's state: JSON plus ``doit.json.journal`` of finished tasks (``db``)."""
        return f"{self.home}/doit.json"

    @property
    def lock_file(self) -> str:
        return f"{self.home}/build.lock"

    @property
    def exports_dir(self) -> str:
        return f"{self.home}/exports"

    # The store's folders ------------------------------------------------------
    @property
    def snapshots_dir(self) -> str:
        return f"{self.home}/snapshots"

    @property
    def tags_dir(self) -> str:
        return f"{self.home}/tags"

    @property
    def instances_dir(self) -> str:
        return f"{self.home}/instances"

    @property
    def cache_dir(self) -> str:
        return f"{self.home}/cache"

    @property
    def replay_dir(self) -> str:
        return f"{self.home}/replay"

    @property
    def layers_dir(self) -> str:
        """Turn layers (``data.layers``): one folder per layer key."""
        return f"{self.home}/layers"

    def layer_dir(self, key: str) -> str:
        return f"{self.home}/layers/{key[:2]}/{key}"

    @property
    def layer_objects_dir(self) -> str:
        """The content of the files local-shell layers keep, by digest."""
        return f"{self.home}/layers/_objects"

    @property
    def layer_tmp_dir(self) -> str:
        """Layers being written; renamed into place only when whole."""
        return f"{self.home}/layers/_tmp"

    def snapshot_file(self, snapshot_id: str) -> str:
        return f"{self.home}/snapshots/{snapshot_id}.json"

    def instance_dir(self, instance_id: str) -> str:
        return f"{self.home}/instances/{instance_id}"

    def agents_dir(self, name: str) -> str:
        """Where the session tools of session ``name``'s build run write the sessions it
        creates and messages (never in ``sessions/``), emptied as the run starts."""
        return f"{self.home}/agents/{name}"

    def instance_kept_file(self, instance_id: str) -> str:
        """Present when an error told the user this instance keeps their question or
        reply: ``domarkx prune`` leaves the instance alone (``domarkx rm`` removes it)."""
        return f"{self.instance_dir(instance_id)}/kept"

    @property
    def snapshot_outs_dir(self) -> str:
        """The snapshot stage's outputs (``<name>.id``): the snapshots a build uses."""
        return f"{self.home}/{BUILD_CACHES}/snapshot"

    # Which files are sessions -------------------------------------------------
    def session_of(self, path: str) -> str | None:
        """The session name of the file at ``path`` (absolute, or relative to the
        current folder), or None when it is no session: outside ``sessions/``, not
        ``*.md``, or a partial (``_*``) or hidden (``.*``) file or folder on the way.
        """
        sessions = self.abs(SESSIONS_DIR) + os.sep
        path = os.path.abspath(path)
        if not path.startswith(sessions) or not path.endswith(SESSION_SUFFIX):
            return None
        name = path[len(sessions) : -len(SESSION_SUFFIX)].replace(os.sep, "/")
        return name if is_session_name(name) else None

    # Listing ------------------------------------------------------------------
    def session_names(self) -> list[str]:
        """Every session: ``sessions/**/*.md`` less partials (``_*``) and hidden files."""
        return _walk(self.abs(SESSIONS_DIR), SESSION_SUFFIX)

    def session_entries(self) -> tuple[list[str], set[str]]:
        """Every session, and those whose file cannot be read as one (see ``_walk``)."""
        odd: set[str] = set()
        return _walk(self.abs(SESSIONS_DIR), SESSION_SUFFIX, odd), odd

    def export_names(self) -> list[str]:
        return _walk(self.abs(self.exports_dir), ".md")

    def included_files(self) -> dict[str, list[str]]:
        """For each session that includes files, those files (project-relative)."""
        result = {}
        for name in self.cached_names(f"{BUILD_CACHES}/deps", ".json"):
            included = self.read_deps(name)
            if included:
                result[name] = included
        return result

    def replayed_files(self) -> dict[str, list[str]]:
        """For each session whose run used model replies, their replay records."""
        result = {}
        for name in self.cached_names(f"{BUILD_CACHES}/replay-deps", ".json"):
            records = self.read_deps(name, self.replay_deps_file(name))
            if records:
                result[name] = records
        return result

    def asked_params(self) -> dict[str, list[str]]:
        """For each session whose macros looked up parameters, their names."""
        result = {}
        for name in self.cached_names(f"{BUILD_CACHES}/params", ".json"):
            asked = self.read_deps(name, self.params_file(name))
            if asked:
                result[name] = asked
        return result

    def cached_names(self, folder: str, suffix: str) -> list[str]:
        """The sessions with a ``*suffix`` file in ``folder`` (under the store): a file name
        cut to fit (``cache_name``) is read back as the session whose file it is."""
        stems = _walk(self.abs(f"{self.home}/{folder}"), suffix)
        if not any(_is_cut(stem) for stem in stems):
            return stems
        # A name that long is rare: only then are the sessions listed to know them.
        long = (n for n in self.session_names() if len(n) > SHORT_NAME)
        whole = {cache_name(n, suffix)[: -len(suffix)]: n for n in long}
        return sorted({whole.get(stem, stem) for stem in stems})

    def read_deps(self, name: str, path: str | None = None) -> list[str]:
        try:
            with open(self.abs(path or self.deps_file(name)), encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return []
        return [str(item) for item in data] if isinstance(data, list) else []

    def stamp(self, kind: str, data: object) -> str:
        """A file standing for a configuration, named by its digest (see ``tasks``).

        A task lists it in ``file_dep``: other settings mean another file, so
        doit sees a changed dependency list and re-runs the task. This is what
        ``config_changed`` does, at the cost of one ``stat`` instead of the
        ~20 us doit spends inspecting each ``uptodate`` callable.
        """
        text = canonical_json(data)
        path = f"{self.home}/cache/config/{kind}-{digest(data)[:16]}.json"
        full = self.abs(path)
        if not os.path.exists(full):
            # reason: tempfile and the atomic writer (~3 ms) for a first build only, not
            # for every `domarkx` start (--help, commands that never write a stamp)
            from domarkx.data.atomic import write_atomic

            write_atomic(full, text + "\n")
        return path


def is_session_name(name: str) -> bool:
    """The one rule of which files are sessions, for a name ``a/b`` (``sessions/a/b.md``):
    no part of it is a partial (``_*``, included by sessions, as in Sass) or hidden (``.*``),
    and it is not under ``templates/`` (what ``create_session`` copies, docs/llm.md).
    """
    return (
        bool(name)
        and all(part and part[0] not in "._" for part in name.split("/"))
        and name.split("/", 1)[0] != TEMPLATES_DIR
    )


def _is_cut(stem: str) -> bool:
    """Whether a cache file's name (less its suffix) may be a long name cut to fit."""
    last = stem.rpartition("/")[2]
    return len(last) > 17 and last[-17] == LONG_NAME


def _walk(base: str, suffix: str, odd: set[str] | None = None) -> list[str]:
    """Names (``a/b``) of the ``*suffix`` files under ``base``, skipping ``_*`` and ``.*``.

    What it skips is ``is_session_name``'s rule (``templates/`` at the top too),
    applied part by part as it descends. A folder reached twice (a symlink loop)
    is walked once. Names whose entry is not a regular file (a named pipe, a
    broken or looping symlink) are listed too, and added to ``odd``: their ``parse`` task reports them, so
    that nothing opens them on the way (a pipe would wait forever).
    """
    names: list[str] = []
    stack = [("", base)]
    seen: set[tuple[int, int]] = set()
    cut = len(suffix)
    while stack:
        prefix, folder = stack.pop()
        try:
            info = os.stat(folder)
            entries = os.scandir(folder)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        with entries:
            for entry in entries:
                entry_name = entry.name
                if entry_name[0] in "._":
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    if not (prefix == "" and entry_name == TEMPLATES_DIR):  # no sessions
                        stack.append((f"{prefix}{entry_name}/", entry.path))
                elif entry_name.endswith(suffix):
                    name = prefix + entry_name[:-cut]
                    names.append(name)
                    if odd is not None and not _is_regular(entry):
                        odd.add(name)
    names.sort()
    return names


def _is_regular(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False
