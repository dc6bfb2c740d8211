"""Turn layers seen from outside a run: ``domarkx layers SESSION`` and ``prune``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from domarkx import config as project_config
from domarkx.data.layers import LayerStore
from domarkx.data.models import SessionSnapshot
from domarkx.data.store import Store
from domarkx.errors import DomarkxError
from domarkx.execution.engine import Engine, engine_class
from domarkx.session.approval import for_project
from domarkx.session.layer_keys import Step, chain
from domarkx.session.layers import BROKEN, forget_for


def listing(store: Store, snapshot: SessionSnapshot) -> list[dict[str, Any]]:
    """``domarkx layers``: each step of the snapshot's chain and its layer, if any.

    The keys are those of a run under the project's grant (``approve``, ``DOMARKX_YES``).
    """
    cls = engine_for(snapshot)
    layers = LayerStore(store.layout)
    never = for_project(store.root).mode == "never"
    key0, steps = chain(snapshot, snapshot.conversation, cls, never=never)
    rows: list[tuple[str, str, Step | None]] = []
    if snapshot.setup_script is not None:
        rows.append(("setup", key0, None))
    rows += [
        (f"{s.message + 1} ({snapshot.conversation[s.message].role})", s.key, s) for s in steps
    ]
    found = []
    for label, key, _ in rows:
        record = layers.get(key)
        broken = layers.folder(key) / BROKEN
        reasons: list[str] = []
        if record is not None:
            reasons = list(record.get("reasons") or [])
            if broken.exists():
                reasons.append("did not come back: " + broken.read_text(encoding="utf-8").strip())
            elif record.get("restorable"):
                missing = cls.files_missing(record.get("files") or {}, layers.objects)
                if missing:
                    reasons.append(missing)
        found.append(
            {
                "message": label,
                "key": key,
                "present": record is not None,
                "size": int(record.get("size") or 0) if record else 0,
                "restorable": record is not None and not reasons,
                "reasons": reasons,
                "last_used": layers.last_used(key) if record else None,
            }
        )
    return found


def engine_for(snapshot: SessionSnapshot) -> type[Engine]:
    return engine_class(snapshot.config().engine)


def prune(store: Store, snapshots: list[SessionSnapshot]) -> list[str]:
    """Remove the layers no snapshot of ``snapshots`` uses; the keys removed.

    A snapshot uses the layers of its runs under any grant (``approve = "never"`` or not).
    """
    layers = LayerStore(store.layout)
    used: set[str] = set()
    for snapshot in snapshots:
        for never in (False, True):
            with contextlib.suppress(DomarkxError):
                cls = engine_for(snapshot)
                key0, steps = chain(snapshot, snapshot.conversation, cls, never=never)
                used |= {key0, *(s.key for s in steps)}
    removed = []
    for key in layers.all_keys():
        if key in used:
            continue
        record = layers.remove(key)
        if record is not None:
            with contextlib.suppress(DomarkxError):
                forget_for(engine_class(str(record.get("engine") or "")))(record)
        removed.append(key)
    layers.clean_tmp()
    layers.collect_objects()
    return removed


def prune_strays(store: Store, engines: Iterable[type[Engine]]) -> list[str]:
    """Remove this project's layer files that no layer holds: what a save killed after
    keeping its files (a committed Docker image) and before writing its record left.

    A save under way in another process (a ``chat`` turn) may lose its files to this;
    its layer then says they are gone, and runs start before it.
    """
    layers = LayerStore(store.layout)
    keep: set[str] = set()
    for key in layers.all_keys():
        files = (layers.get(key) or {}).get("files") or {}
        keep |= {value for value in files.values() if isinstance(value, str)}
    host = project_config.load(store.root).docker.host
    removed: list[str] = []
    for cls in engines:
        with contextlib.suppress(DomarkxError):  # an engine not reachable here: nothing of it
            removed += cls.prune_layers(keep, store.project_id, host)
    return removed
