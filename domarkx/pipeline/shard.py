"""Shards: ``domarkx build --shard I/N`` builds only the sessions of shard I of N.

A leaf module (the standard library and ``errors``): the task list asks it which sessions
are this build's. Every session falls in exactly one shard, the same on every
machine and in every run: shard ``1 + (sha256(name) mod N)``, from the
session's name alone, so that no machine needs to see another's work or the
list of the others' sessions.

The choice travels in ``DOMARKX_SHARD`` (``I/N``), which ``domarkx build
--shard`` sets for its tasks: a plain ``doit`` with the variable set builds a
shard too. ``--shard auto`` reads the index and count the CI gives its
parallel jobs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from domarkx.errors import DomarkxError

ENV = "DOMARKX_SHARD"

# (index variable, count variable, whether the index counts from 0), in the order tried.
CI_VARIABLES = (
    ("CI_NODE_INDEX", "CI_NODE_TOTAL", False),  # GitLab parallel:, Semaphore, Travis-likes
    ("BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT", True),  # Buildkite parallelism
    ("CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", True),  # CircleCI parallelism
    ("JOB_COMPLETION_INDEX", None, True),  # Kubernetes Indexed Job (count: --shard-count)
    ("DOMARKX_SHARD_INDEX", "DOMARKX_SHARD_COUNT", False),  # anything else (GitHub matrix)
)


class ShardError(DomarkxError):
    """A shard that cannot be: the message says what is wrong and what to give."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (from 1) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, name: str) -> bool:
        return shard_of(name, self.count) == self.index

    def select(self, names: Iterable[str]) -> list[str]:
        """The names of ``names`` in this shard, in their order."""
        return [name for name in names if self.holds(name)]


def shard_of(name: str, count: int) -> int:
    """The shard (1..count) of the session ``name``: a stable hash of its name."""
    value = int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:8])
    return 1 + value % count


def parse(text: str, count: int | None = None, env: Mapping[str, str] | None = None) -> Shard:
    """``I/N`` or ``auto`` (the CI's variables; ``count`` from ``--shard-count``) as a Shard."""
    text = text.strip()
    if text == "auto":
        return from_ci(os.environ if env is None else env, count)
    index_text, slash, count_text = text.partition("/")
    if not slash:
        raise ShardError(f"--shard {text!r}: give I/N (shard I of N, from 1), or auto")
    return _shard(index_text, count_text, f"--shard {text!r}", zero_based=False)


def from_ci(env: Mapping[str, str], count: int | None = None) -> Shard:
    """The shard the CI's parallel-job variables give (``--shard auto``)."""
    for index_var, count_var, zero_based in CI_VARIABLES:
        index_text = env.get(index_var, "").strip()
        if not index_text:
            continue
        if count_var is None or count is not None:
            if count is None:
                raise ShardError(
                    f"--shard auto: {index_var} is set but gives no count; add --shard-count N"
                )
            count_text = str(count)
            where = f"{index_var}={index_text} with --shard-count {count}"
        else:
            count_text = env.get(count_var, "").strip()
            where = f"{index_var}={index_text}, {count_var}={count_text or '(unset)'}"
        return _shard(index_text, count_text, where, zero_based=zero_based)
    names = ", ".join(v[0] for v in CI_VARIABLES)
    raise ShardError(f"--shard auto: none of {names} is set; give --shard I/N")


def from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard ``DOMARKX_SHARD`` names (None: the whole build)."""
    text = (os.environ if env is None else env).get(ENV, "").strip()
    if not text:
        return None
    try:
        return parse(text)
    except ShardError as err:
        raise ShardError(f"{ENV}={text!r}: {err.message.partition(': ')[2]}") from None


def select(names: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    """``names`` less the sessions of other shards (all of them when no shard is set)."""
    shard = from_env(env)
    return names if shard is None else shard.select(names)


def _shard(index_text: str, count_text: str, where: str, zero_based: bool) -> Shard:
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ShardError(f"{where}: the index and count must be whole numbers") from None
    if zero_based:
        index += 1
    if count < 1:
        raise ShardError(f"{where}: the count must be at least 1")
    if not 1 <= index <= count:
        first, last = (0, count - 1) if zero_based else (1, count)
        raise ShardError(f"{where}: the index must be from {first} to {last}")
    return Shard(index, count)
