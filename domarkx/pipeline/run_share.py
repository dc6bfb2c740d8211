"""Run records through the shared cache (``[cache]``): fetched before a run, uploaded after.

A run record names, by digest, the model replay records its run used. A
record fetched from the shared cache comes with those replay records (each a
blob checked against the digest the record names), so the execution cache's
own check (``RunCache.lookup``: every reply it used is there, unchanged)
passes on a machine that never ran the session and never asked a model. A
record whose replay records cannot all be fetched is not written: the run
happens here. What a run made here is uploaded, replay records first, when
this machine may write.
"""

from __future__ import annotations

import json
from pathlib import Path

from domarkx.data import remote
from domarkx.data.atomic import write_atomic
from domarkx.data.store import Store
from domarkx.llm.replay import ReplayCache


def fetch_run(store: Store, key: str, path: Path) -> bool:
    """Bring the record of run ``key`` (and the replies it used) from the shared cache."""
    cache = remote.for_project(store.root)
    if cache is None:
        return False
    data = cache.get("run", key)
    if data is None:
        return False
    try:
        used = json.loads(data).get("replay") or {}
        pairs = [(str(k), v) for k, v in used.items()]
    except (ValueError, AttributeError):
        cache.reject(f"ac/run/{key}", "names a blob that is not a run record")
        return False
    replays = ReplayCache(store.replay_dir, mode="auto")
    for replay_key, replay_digest in pairs:
        target = replays.path_for(replay_key)
        if target.exists() or not isinstance(replay_digest, str):
            continue  # here already (the execution cache checks its digest), or none was used
        blob = cache.get_blob(replay_digest, via=f"ac/run/{key}")
        if blob is None:
            return False  # the run happens here
        write_atomic(target, blob, durable=True)
    write_atomic(path, data)
    return True


def share_run(store: Store, key: str, path: Path, replay_keys: list[str]) -> None:
    """Upload the record of run ``key`` and the replay records it used (when allowed)."""
    cache = remote.for_project(store.root)
    if cache is None or not cache.write:
        return
    replays = ReplayCache(store.replay_dir, mode="auto")
    for replay_key in replay_keys:
        try:
            remote.share(cache, "replay", replay_key, replays.path_for(replay_key).read_bytes())
        except OSError:
            continue
    try:
        remote.share(cache, "run", key, path.read_bytes())
    except OSError:
        return
