"""Ending what runs leave behind: stop, rm, reap, prune, and the runs live in this process.

A run records its owner process in its instance from the start; an instance
whose owner died (SIGKILL) while it was ``created`` or ``running`` is
orphaned, and ``reap`` (every build) or ``prune`` ends it: its sandbox is
destroyed and it is marked ``failed``. Only this project's sandboxes are
ever touched (``PROJECT_LABEL``). ``prune`` holds the build lock meanwhile.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from collections.abc import Callable

from domarkx import config as project_config
from domarkx import registry
from domarkx.data import lock
from domarkx.data.models import SessionInstance, SessionSnapshot
from domarkx.data.store import Store
from domarkx.errors import DomarkxError, EngineError, PluginError
from domarkx.execution.engine import GROUP, Engine, engine_class
from domarkx.session import layer_admin, owners
from domarkx.session.blocks import now
from domarkx.signals import process_alive


def stop(store: Store, ref: str) -> SessionInstance:
    """``domarkx stop``: destroy the instance's sandbox; a run under way becomes ``stopped``."""
    instance = store.get_instance(store.resolve_instance(ref))
    destroy_sandbox(instance)
    if instance.status in ("running", "created"):
        instance.status = "stopped"
        instance.finished_at = instance.finished_at or now()
    store.put_instance(instance)
    return instance


def remove(store: Store, ref: str) -> str:
    """``domarkx rm``: destroy the sandbox and remove the instance (even a damaged one)."""
    instance_id = store.resolve_instance(ref)
    try:
        instance = store.get_instance(instance_id)
    except DomarkxError:
        instance = None
    if instance is not None:
        destroy_sandbox(instance)
    store.remove_instance(instance_id)
    return instance_id


def destroy_sandbox(instance: SessionInstance) -> None:
    """Destroy the sandbox of ``instance`` if it is alive (a warning when that fails)."""
    if not instance.sandbox.get("alive"):
        return
    owner = instance.sandbox.get("owner_pid")
    if owner and owner != os.getpid() and process_alive(owner):
        # An interactive run still owns the sandbox: ask it to end.
        with contextlib.suppress(OSError):
            os.kill(owner, signal.SIGTERM)
    try:
        engine_class(instance.engine).destroy(instance.sandbox)
    except EngineError as err:
        print(f"domarkx: warning: {err}", file=sys.stderr)
    instance.sandbox["alive"] = False


def orphaned(instance: SessionInstance) -> bool:
    """Whether ``instance`` was left by a run that died (SIGKILL) without ending it.

    Its owner process is gone while it is still ``created`` or ``running``,
    and it was not kept on purpose (``domarkx run --keep`` leaves a running
    sandbox whose owner has exited).
    """
    if instance.status not in ("created", "running"):
        return False
    sandbox = instance.sandbox
    if instance.status == "running" and not sandbox.get("alive", True):
        return True
    owner = sandbox.get("owner_pid")
    if not owner or process_alive(int(owner)):
        return False
    return not sandbox.get("keep", False) or instance.engine == "local_shell"


def reap(store: Store) -> list[str]:
    """End what killed runs of this project left: their sandboxes and instances.

    Each orphaned instance gets its sandbox destroyed and is marked
    ``failed``; then every sandbox of this project that no live instance
    owns is removed. Another project's sandboxes are never touched.
    """
    reaped: list[str] = []
    gone = owners.dead(store.home)
    for instance_id in store.instance_ids():
        try:
            instance = store.get_instance(instance_id)
        except DomarkxError:
            continue
        if orphaned(instance):
            destroy_sandbox(instance)
            instance.status = "failed"
            instance.error = instance.error or "interrupted: its process was killed"
            instance.finished_at = instance.finished_at or now()
            store.put_instance(instance)
            reaped.append(instance_id)
    reaped += prune_sandboxes(store)
    owners.forget(store.home, gone)
    return reaped


def engine_classes() -> list[type[Engine]]:
    """The engines installed (a broken plugin is left out: ``prune_sandboxes`` says so)."""
    found = []
    for name in registry.names(GROUP):
        with contextlib.suppress(PluginError):
            found.append(engine_class(name))
    return found


def prune_sandboxes(store: Store) -> list[str]:
    """Remove this project's sandboxes that no live instance owns."""
    live = LiveInstances(store)
    settings = project_config.load(store.root)  # [docker] host: where the sandboxes run
    removed: list[str] = []
    for name in registry.names(GROUP):
        try:
            cls = engine_class(name)
        except PluginError as err:
            # One broken engine plugin must not stop the cleanup of the others.
            print(f"domarkx: warning: {err.message}; skipped", file=sys.stderr)
            continue
        try:
            removed += cls.prune_project(live, store.project_id, settings)
        except EngineError:
            continue  # that engine is not reachable here: nothing of it to prune
    return removed


def prune(store: Store) -> list[str]:
    """Remove finished instances, unused snapshots and this project's stray sandboxes.

    Holds the build lock meanwhile: a build in progress uses snapshots that
    nothing refers to yet, and its sandboxes.
    """
    with lock.BuildLock(str(store.lock_file), doing="prune"):
        gone = owners.dead(store.home)
        removed: list[str] = []
        referenced = set(store.tags().values()) | store.build_snapshot_ids()
        for instance_id in store.instance_ids():
            try:
                instance = store.get_instance(instance_id)
            except DomarkxError:
                store.remove_instance(instance_id)
                removed.append(instance_id)
                continue
            if store.instance_kept(instance_id):  # an error said it keeps the user's question
                referenced.add(instance.snapshot_id)
                print(
                    f"domarkx: kept instance {instance_id[:12]}: it holds a chat's question or "
                    f"reply (`domarkx export {instance_id[:12]}` shows it, `domarkx rm` removes it)",
                    file=sys.stderr,
                )
                continue
            if instance.status in ("exited", "failed", "stopped") or orphaned(instance):
                destroy_sandbox(instance)
                store.remove_instance(instance_id)
                removed.append(instance_id)
            else:
                referenced.add(instance.snapshot_id)
        for snapshot_id in store.snapshot_ids():
            if snapshot_id not in referenced:
                store.remove_snapshot(snapshot_id)
                removed.append(snapshot_id)
        removed += layer_admin.prune(store, kept_snapshots(store))  # layers none of them uses
        removed += layer_admin.prune_strays(store, engine_classes())  # a killed save's images
        removed += prune_sandboxes(store)
        owners.forget(store.home, gone)
        return removed


def kept_snapshots(store: Store) -> list[SessionSnapshot]:
    """The snapshots left after a prune, readable ones only."""
    found = []
    for snapshot_id in store.snapshot_ids():
        with contextlib.suppress(DomarkxError):
            found.append(store.get_snapshot(snapshot_id))
    return found


class LiveInstances:
    """``id in live``: whether that instance of this store still runs, read afresh.

    Read at the moment a sandbox is considered, so that a run which started
    after the listing (its instance is written before its sandbox) is kept.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def __contains__(self, instance_id: object) -> bool:
        if not isinstance(instance_id, str) or "/" in instance_id or instance_id in ("", ".", ".."):
            return False
        try:
            instance = self.store.get_instance(instance_id)
        except DomarkxError:
            return False
        if instance.status not in ("created", "running"):
            return False
        return not orphaned(instance)


# Runs under way in this process, by instance id: how to end each one. A build
# runs sessions in doit's worker threads (see domarkx/overlap.py); when it is
# interrupted, the main thread ends and those threads stop wherever they are,
# without reaching the end of their run. At exit they end here as an
# interrupted run in the main thread would: the sandbox destroyed, the
# instance ``failed``.
_live: dict[str, Callable[[], None]] = {}
_exiting = False


def track(instance_id: str, end: Callable[[], None]) -> None:
    """Record a run under way; ``end`` ends it as interrupted if the process exits first."""
    _live[instance_id] = end


def untrack(instance_id: str) -> None:
    """The run of ``instance_id`` has ended (however it did)."""
    _live.pop(instance_id, None)


def refuse_when_exiting() -> None:
    """No run starts once the process has begun to exit (a thread that was waiting)."""
    if _exiting:
        raise DomarkxError("the process is ending: the run did not start")


def _end_live_runs() -> None:
    global _exiting
    _exiting = True
    for instance_id, end in list(_live.items()):
        _live.pop(instance_id, None)
        with contextlib.suppress(Exception):
            end()


atexit.register(_end_live_runs)
