"""The one canonical-JSON digest: snapshot ids, replay keys, run keys, config stamps.

Keys sorted, no spaces, UTF-8 as it is (``ensure_ascii=False``), then
SHA-256: the same data gives the same digest in every process and on every
machine (as jupyter-cache hashes a notebook's canonical form). Standard
library only: the task loader imports it on every ``doit`` run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(data: Any) -> str:
    """``data`` as canonical JSON text (what ``digest`` hashes)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(data: Any) -> str:
    """The SHA-256 hex digest of ``data``'s canonical JSON."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()
