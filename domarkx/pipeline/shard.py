"""Shards: ``domarkx build --shard I/N`` builds only the sessions of shard I of N.

The task list asks this module which sessions are this build's. Every
session falls in exactly one shard, the same on every machine and in every
run of one pipeline, because the partition is computed from what every
shard sees identically: the list of sessions in the checkout and, when the
checkout has one, its committed durations file (``.domarkx/durations.json``,
written by ``domarkx build --store-durations``, see ``durations``).

- With a durations file: greedy longest first, each session onto the least
  loaded shard (ties: the lowest index); a session the file does not know
  counts as the mean of those it knows. Integer milliseconds throughout, so
  the arithmetic is the same on every machine.
- Without one: shard ``1 + (sha256(name) mod N)``, from the name alone.

Nothing changes the partition while a pipeline runs: the file is part of
the commit the shards check out (the shared cache, which shards write as
they go, is never read for it).

The choice travels in ``DOMARKX_SHARD`` (``I/N``), which ``domarkx build
--shard`` sets for its tasks: a plain ``doit`` with the variable set builds a
shard too. ``--shard auto`` reads the index and count the CI gives its
parallel jobs.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
from collections.abc import Iterable, Mapping

from domarkx.data.layout import Layout
from domarkx.errors import DomarkxError

ENV = "DOMARKX_SHARD"
# What a session costs besides its run (parse, expand, snapshot, export), in ms: a
# session whose run took no time still weighs something, so that many of them spread.
BASE_MS = 10

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


class Shard:
    """Shard ``index`` (from 1) of ``count``.

    A plain class: every build imports this module, and making a frozen
    dataclass costs ~0.8 ms of it.
    """

    __slots__ = ("count", "index")

    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.count = count

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shard) and (self.index, self.count) == (other.index, other.count)

    def __hash__(self) -> int:
        return hash((self.index, self.count))

    def __repr__(self) -> str:
        return f"Shard({self.index!r}, {self.count!r})"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, names: Iterable[str], durations: Mapping[str, int] | None = None) -> list[str]:
        """The names of ``names`` in this shard, in their order.

        ``names`` must be every session of the project (the partition of one
        depends on the others when ``durations``, milliseconds by name, are given).
        """
        names = list(names)
        if durations:
            shards = balanced(names, self.count, durations)
            return [name for name in names if shards[name] == self.index]
        return [name for name in names if shard_of(name, self.count) == self.index]


def shard_of(name: str, count: int) -> int:
    """The shard (1..count) of the session ``name``: a stable hash of its name."""
    value = int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:8])
    return 1 + value % count


def balanced(names: Iterable[str], count: int, durations: Mapping[str, int]) -> dict[str, int]:
    """The shard (1..count) of each name: longest first onto the least loaded shard.

    ``durations`` are milliseconds by name; a name it lacks weighs the mean of
    the names it has (with none known, every name weighs the same).
    """
    unique = sorted(set(names))
    known = [durations[name] for name in unique if name in durations]
    mean = sum(known) // len(known) if known else 0
    weights = {name: durations.get(name, mean) + BASE_MS for name in unique}
    order = sorted(unique, key=lambda name: (-weights[name], name))
    loads = [(0, index) for index in range(1, count + 1)]  # (load, shard): a min-heap
    chosen: dict[str, int] = {}
    for name in order:
        load, index = heapq.heappop(loads)
        chosen[name] = index
        heapq.heappush(loads, (load + weights[name], index))
    return chosen


def read_durations(layout: Layout) -> dict[str, int] | None:
    """The committed durations file as milliseconds by session (None: there is none).

    A file that is not a JSON object of session names to seconds is one error.
    """
    path = layout.abs(layout.durations_file)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ShardError(
            f"cannot read it: {err.strerror or err}", file=layout.durations_file
        ) from None
    hint = "write it again with `domarkx build --store-durations` (or delete it: shards by name)"
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ShardError(f"not JSON: {err}", file=layout.durations_file, hint=hint) from None
    if not isinstance(data, dict):
        raise ShardError(
            "not a JSON object of session names to seconds", file=layout.durations_file, hint=hint
        )
    found: dict[str, int] = {}
    for name, seconds in data.items():
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ShardError(
                f"{name!r}: {seconds!r} is not a number of seconds",
                file=layout.durations_file,
                hint=hint,
            )
        found[str(name)] = round(seconds * 1000)
    return found


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


def select(
    names: list[str], layout: Layout | None = None, env: Mapping[str, str] | None = None
) -> list[str]:
    """``names`` (every session of ``layout``'s project) less the sessions of other shards.

    All of them when no shard is set; balanced by ``layout``'s durations file when it has one.
    """
    shard = from_env(env)
    if shard is None:
        return names
    return shard.select(names, read_durations(layout) if layout is not None else None)


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
