"""The state of a sandbox's language processes, saved into a layer and restored from it.

Both engines use this through ``Engine.run_internal`` (blocks of domarkx's own,
which do not count as the session's blocks): what is read and written is the
same whatever the transport.

- The shell (bash only; a POSIX ``sh`` cannot list its functions, so its state
  cannot be saved whole): variables that differ from the environment the shell
  started with (``declare -p``, arrays included; ``unset`` for those removed),
  functions (``declare -f``), aliases, ``shopt`` and ``set -o`` options, and the
  current folder. The dump runs in a subshell, so it changes nothing.
- The persistent Python process: every global name of ``__main__``. Modules
  come back by importing them again by name; functions a block defined come
  back from their source (checked at save time: compiled again, they give the
  same code), with their defaults; classes of a Python setup script come back
  by running the setup script again first; everything else must pickle
  (stdlib ``pickle``, inside the sandbox: images may have ``python3-minimal``
  only). A name none of these restores, a thread, or an open file or socket
  makes the state not restorable, with the reason.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from domarkx.execution.engine import Engine

# Timeout of one save or restore block, in seconds.
STATE_TIMEOUT = 60.0

SHELL_PROBE = 'printf "%s" "${BASH_VERSION:-}"'

# Runs in a subshell of the session's bash: it sees everything and changes nothing.
# Sections start with "#@name" lines; the host puts them back in restoring order.
SHELL_DUMP = r"""(
set +eu
__dmx_opts=$(set +o)
declare -A __dmx_init=()
if [ -r "/proc/$$/environ" ]; then
    while IFS= read -r -d '' __dmx_e; do
        __dmx_init["${__dmx_e%%=*}"]="${__dmx_e#*=}"
    done <"/proc/$$/environ"
fi
printf '#@vars\n'
mapfile -t __dmx_names < <(compgen -v)
for __dmx_v in "${__dmx_names[@]}"; do
    case $__dmx_v in
        BASH | BASH_* | BASHOPTS | BASHPID | EUID | PPID | UID | SHELLOPTS | SHLVL | _ | \
        RANDOM | SRANDOM | LINENO | SECONDS | FUNCNAME | GROUPS | DIRSTACK | PIPESTATUS | \
        HISTCMD | EPOCHSECONDS | EPOCHREALTIME | PWD | OLDPWD | HOSTNAME | HOSTTYPE | \
        MACHTYPE | OSTYPE | COMP_WORDBREAKS | DOMARKX_SANDBOX | __dmx_*) continue ;;
    esac
    if [[ -v "__dmx_init[$__dmx_v]" && "${!__dmx_v@a}" == x ]] &&
        [[ "${!__dmx_v}" == "${__dmx_init[$__dmx_v]}" ]]; then
        continue
    fi
    declare -p "$__dmx_v" 2>/dev/null
done
for __dmx_v in "${!__dmx_init[@]}"; do
    case $__dmx_v in PWD | OLDPWD | SHLVL | _ | DOMARKX_SANDBOX) continue ;; esac
    [[ -v "$__dmx_v" ]] || printf 'unset %s\n' "$__dmx_v"
done
printf '#@functions\n'
mapfile -t __dmx_names < <(compgen -A function)
for __dmx_v in "${__dmx_names[@]}"; do declare -f "$__dmx_v"; done
printf '#@aliases\n'
alias -p
printf '#@shopt\n'
shopt -p
printf '#@set\n'
printf '%s\n' "$__dmx_opts"
printf '#@cwd\n'
printf 'cd -- %q\n' "$PWD"
)"""

SHELL_SECTIONS = ("vars", "functions", "aliases", "shopt", "set", "cwd")

# Reads __main__'s globals. Prints a repr() of what it found (plain data: the host
# reads it with ast.literal_eval, never unpickles) and, on a second line, the
# base64 of the pickled state that PYTHON_RESTORE takes back.
PYTHON_SAVE = r"""
def __dmx_save(setup_code):
    import base64, linecache, os, pickle, sys, types

    ns = sys.modules["__main__"].__dict__
    reasons, modules, functions, setup, values, defaults = [], {}, {}, [], {}, {}
    setup_files = set()
    if setup_code is not None:
        for filename, entry in list(linecache.cache.items()):
            if filename.startswith("<block-") and "".join(entry[2]) == setup_code:
                setup_files.add(filename)

    def origin(obj):
        code = getattr(obj, "__code__", None)
        if code is not None:
            return code.co_filename
        for member in vars(obj).values():
            code = getattr(getattr(member, "__func__", member), "__code__", None)
            if code is not None:
                return code.co_filename
        # No methods: the last block with a line "class NAME" at the top level.
        heads = ("class %s:" % obj.__name__, "class %s(" % obj.__name__)
        found = [(int(f[7:-1]), f) for f, e in linecache.cache.items()
                 if f.startswith("<block-") and any(x.startswith(heads) for x in e[2])]
        return max(found)[1] if found else None

    def from_source(name, fn):
        code = fn.__code__
        entry = linecache.cache.get(code.co_filename)
        if entry is None or fn.__closure__ or vars(fn):
            return None
        lines = entry[2]
        first = code.co_firstlineno
        body = [lines[first - 1]] if first <= len(lines) else []
        if not body or not body[0].startswith(("def ", "async def ")):
            return None  # a decorator, or not at the top level
        for line in lines[first:]:
            if line.strip() and not line[0].isspace() and not line.startswith(")"):
                break
            body.append(line)
        source = "".join(body)
        try:
            compiled = compile("\n" * (first - 1) + source, code.co_filename, "exec")
        except SyntaxError:
            return None
        if not any(c == code for c in compiled.co_consts):
            return None
        return code.co_filename, "".join(lines), first, source

    for name, value in list(ns.items()):
        if name.startswith("__") and name.endswith("__") or name == "__dmx_save":
            continue
        if isinstance(value, types.ModuleType):
            if sys.modules.get(value.__name__) is value:
                modules[name] = value.__name__
            else:
                reasons.append("%s: module %s cannot be imported by name" % (name, value.__name__))
            continue
        own = isinstance(value, (types.FunctionType, type)) and value.__module__ == "__main__"
        if own and value.__qualname__ == name:
            where = origin(value)
            found = from_source(name, value) if isinstance(value, types.FunctionType) else None
            if found is not None:
                functions[name] = found
                defaults[name] = (value.__defaults__, value.__kwdefaults__)
            elif where in setup_files:
                setup.append(name)
            elif isinstance(value, type):
                reasons.append("%s: a class a block defined (only the setup script's come back)"
                               % name)
            else:
                reasons.append("%s: a function whose source does not give it back "
                               "(decorated, nested or changed)" % name)
            continue
        values[name] = value
    blobs = {}
    for label, data in (("values", values), ("defaults", defaults)):
        try:
            blobs[label] = pickle.dumps(data, 4)
            if ROOT and ROOT.encode() in blobs[label]:
                reasons.append("a global holds the path of this sandbox's folder (%s), "
                               "which another sandbox does not have" % ROOT)
        except Exception:
            for name, value in data.items():
                try:
                    pickle.dumps(value, 4)
                except Exception as exc:
                    reasons.append("%s: %s does not pickle (%s)"
                                   % (name, type(value).__name__, str(exc).split("\n")[0]))
            blobs[label] = b""
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        reasons.append("a thread is running: %s" % ", ".join(
            t.name for t in threading.enumerate() if t is not threading.main_thread()))
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        fds = []
    for fd in sorted(int(fd) for fd in fds):
        if fd <= 3:
            continue
        try:
            target = os.readlink("/proc/self/fd/%d" % fd)
        except OSError:
            continue  # the listing's own descriptor, closed meanwhile
        reasons.append("an open file or socket (%s)" % target)
    state = {"modules": modules, "functions": functions, "setup": setup, **blobs}
    print(repr({"reasons": reasons, "setup": setup, "names": sorted(
        list(modules) + list(functions) + setup + list(values))}))
    print(base64.b64encode(pickle.dumps(state, 4)).decode())


globals().pop("__dmx_save")(SETUP)
"""

PYTHON_RESTORE = r"""
def __dmx_restore(blob):
    import base64, linecache, pickle, sys

    ns = sys.modules["__main__"].__dict__
    state = pickle.loads(base64.b64decode(blob))
    for name, module in state["modules"].items():
        __import__(module)
        ns[name] = sys.modules[module]
    for name, (filename, text, first, source) in state["functions"].items():
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
        exec(compile("\n" * (first - 1) + source, filename, "exec"), ns)
    missing = [name for name in state["setup"] if name not in ns]
    if missing:
        raise RuntimeError("the setup script no longer defines " + ", ".join(missing))
    ns.update(pickle.loads(state["values"]))
    for name, (positional, keywords) in pickle.loads(state["defaults"]).items():
        ns[name].__defaults__ = positional
        ns[name].__kwdefaults__ = keywords


globals().pop("__dmx_restore")(BLOB)
"""


@dataclass
class SavedState:
    """What a layer keeps of a sandbox's processes."""

    shell: str | None = None  # a bash script that restores the shell (None: none ran)
    python: str | None = None  # base64 of the Python state (None: no Python ran)
    python_blocks: int = 0  # the session's Python blocks so far (tracebacks number them)
    needs_setup: bool = False  # setup-script classes: run the setup script again first
    root: str | None = None  # the sandbox's folder when saved, where it is per sandbox
    names: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # empty: restorable

    def as_dict(self) -> dict[str, Any]:
        return {
            "shell": self.shell,
            "python": self.python,
            "python_blocks": self.python_blocks,
            "needs_setup": self.needs_setup,
            "root": self.root,
            "names": self.names,
            "reasons": self.reasons,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SavedState:
        return cls(
            shell=data.get("shell"),
            python=data.get("python"),
            python_blocks=int(data.get("python_blocks") or 0),
            needs_setup=bool(data.get("needs_setup")),
            root=data.get("root"),
            names=list(data.get("names") or []),
            reasons=list(data.get("reasons") or []),
        )


class RestoreError(Exception):
    """A layer's state did not come back whole; the run starts from an earlier one."""


def shell_script(dump: str) -> str:
    """The dump's sections in restoring order: variables, functions, aliases, options, cwd."""
    sections: dict[str, list[str]] = {name: [] for name in SHELL_SECTIONS}
    current: list[str] | None = None
    for line in dump.splitlines():
        if line.startswith("#@") and line[2:] in sections:
            current = sections[line[2:]]
            continue
        if current is not None:
            current.append(line)
    return "\n".join(line for name in SHELL_SECTIONS for line in sections[name]) + "\n"


def capture(engine: Engine, setup_code: str | None) -> SavedState:
    """Read the state of ``engine``'s live language processes."""
    state = SavedState()
    live = engine.live_languages()
    if "bash" in live:
        probe = engine.run_internal("bash", SHELL_PROBE, STATE_TIMEOUT)
        if not probe.stdout.strip():
            state.reasons.append("the shell is sh, not bash: its functions cannot be listed")
        else:
            dump = engine.run_internal("bash", SHELL_DUMP, STATE_TIMEOUT)
            if not dump.ok:
                state.reasons.append(f"the shell's state could not be read: {dump.stderr[:200]}")
            else:
                state.shell = shell_script(dump.stdout)
                state.root = engine.state_root()
    if "python" in live:
        code = PYTHON_SAVE.replace("ROOT", repr(engine.state_root() or "")).replace(
            "SETUP", repr(setup_code)
        )
        result = engine.run_internal("python", code, STATE_TIMEOUT)
        lines = result.stdout.splitlines()
        meta: Any = None
        if result.ok and len(lines) >= 2:
            try:
                meta = ast.literal_eval(lines[-2])
            except (ValueError, SyntaxError):
                meta = None
        if not isinstance(meta, dict):
            said = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]
            state.reasons.append(
                "the Python state could not be read" + "".join(f": {s}" for s in said)
            )
        else:
            state.python = lines[-1]
            state.reasons += [str(r) for r in meta.get("reasons", [])]
            state.needs_setup = bool(meta.get("setup"))
            state.names = [str(n) for n in meta.get("names", [])]
        state.python_blocks = engine.python_blocks()
    state.reasons += engine.background_processes()
    return state


def restore(engine: Engine, state: SavedState, setup: tuple[str, str] | None) -> None:
    """Bring ``state`` back in ``engine`` (started from the layer's files)."""
    if state.python is not None:
        if state.needs_setup and setup is not None:
            ran = engine.run(setup[0], setup[1], STATE_TIMEOUT)
            if not ran.ok:
                raise RestoreError(f"the setup script failed when run again: {ran.stderr[-200:]}")
        code = PYTHON_RESTORE.replace("BLOB", repr(state.python))
        result = engine.run_internal("python", code, STATE_TIMEOUT, count=state.python_blocks)
        if not result.ok:
            said = result.stderr.strip().splitlines()[-1:] or ["no message"]
            raise RestoreError(f"the Python state did not come back: {said[0]}")
    if state.shell is not None:
        script, root = state.shell, engine.state_root()
        if state.root and root:  # this sandbox's folder where the saved one's was
            script = script.replace(state.root, root)
        result = engine.run_internal("bash", script, STATE_TIMEOUT)
        if not result.ok or result.stderr:
            raise RestoreError(f"the shell's state did not come back: {result.stderr[:200]}")
