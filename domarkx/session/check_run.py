"""The checks of a run: after each turn of a user message with an expect block, in its sandbox.

A turn is the reply to a user message: the messages up to the next user
message. Its checks run once the last code of the turn has run and before
any code of the next turn does, so ``sh`` and ``python`` checks see the
sandbox as the turn left it. The checks of the message the model answers
run after the model's turn. With ``samples: N``, the model is asked N times:
the run itself is sample 0; samples 1 to N-1 each run in a sandbox of their
own (a run of the same snapshot, its replies under their own replay keys),
and the results recorded are the samples' summary (``summarise_samples``).

With turn layers (``session.layers``), what each sandbox check did goes in the
record of the layers saved after it. A run that starts from a layer gives the
turns that ended before it their results as a run from scratch would: the
``sh`` and ``python`` checks from the layer's record (the sandbox they saw is
gone; their code is in the layer's key), every other kind evaluated again on
the document (they read only the conversation, and ``judge`` its replay
records).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, cast

from domarkx import config as project_config
from domarkx.checks.evaluate import Result, RunCode, summarise_samples
from domarkx.checks.results import record, recorded
from domarkx.checks.spec import Expect
from domarkx.checks.turns import TurnChecks, has_checks
from domarkx.data.models import SessionInstance, SessionSnapshot
from domarkx.data.store import Store
from domarkx.errors import DomarkxError
from domarkx.execution.engine import BlockResult, Engine
from domarkx.llm.replay import ReplayCache
from domarkx.session.approval import Approval
from domarkx.session.layer_keys import turn_end
from domarkx.session.layers import LayerRun


class Runs(Protocol):
    """What the checks need of the run's manager (``session.instance.InstanceManager``)."""

    store: Store
    replay_mode: str | None
    refused: set[str]
    sample: int
    layer_runs: dict[str, LayerRun | None]

    @property
    def approval(self) -> Approval: ...

    def create(self, snapshot: SessionSnapshot) -> SessionInstance: ...

    def execute(self, instance: SessionInstance, snapshot: SessionSnapshot) -> SessionInstance: ...


class CheckRun:
    """The checks of one run of ``snapshot`` in ``sandbox``."""

    def __init__(self, manager: Runs, snapshot: SessionSnapshot, checks: TurnChecks) -> None:
        self.manager = manager
        self.snapshot = snapshot
        self.checks = checks
        self.done: set[int] = set()
        self.layers: LayerRun | None = None
        self.started = False

    @classmethod
    def for_run(cls, manager: Runs, snapshot: SessionSnapshot) -> CheckRun | None:
        """The run's checks; None when the session has none (the common case: no cost)."""
        if not has_checks(snapshot.conversation):
            return None
        store = manager.store
        checks = TurnChecks.for_snapshot(
            snapshot,
            root=Path(store.root),
            project=project_config.load(store.root),
            cache=ReplayCache(store.replay_dir, mode=manager.replay_mode),
        )
        return cls(manager, snapshot, checks) if checks else None

    def run_code(self, sandbox: Engine) -> RunCode:
        timeout = self.snapshot.config().timeout

        def run(language: str, code: str) -> BlockResult:
            result = sandbox.run(language, code, timeout)
            if self.layers is not None:  # in the record of the next layers
                self.layers.check_ran(language, code, result)
            return result

        return run

    def start(self, instance: SessionInstance) -> None:
        """Once, before the run's first checks: the turns before the layer it started from."""
        if self.started:
            return
        self.started = True
        self.layers = self.manager.layer_runs.get(instance.instance_id)
        if self.layers is None or self.layers.message is None:
            return
        assert self.layers.checks, "a run with checks starts its layers with checks=True"
        recorded = iter(self.layers.recorded_checks())

        def replay(language: str, code: str) -> BlockResult:
            found = next(recorded, None)
            if found is None or found[:2] != (language, code):  # the key holds these checks
                raise DomarkxError(f"the layer's record has no result for the check {code!r}")
            return found[2]

        conversation = instance.conversation
        for user in sorted(self.checks.expects):
            end = turn_end(conversation, user)
            if end is not None and end <= self.layers.message:
                self.done.add(user)
                self.checks.after(conversation, user, replay)
        self._keep_judge_records(instance)
        self.manager.store.put_instance(instance)

    def before(self, instance: SessionInstance, sandbox: Engine, message: int) -> None:
        """Code of message ``message`` is about to run: check the turns that ended before it."""
        self.start(instance)
        conversation = instance.conversation
        for user in sorted(self.checks.expects):
            if user in self.done or user >= message:
                continue
            ends = next(
                (i for i in range(user + 1, len(conversation)) if conversation[i].role == "user"),
                None,
            )
            if ends is not None and ends <= message:
                self._check(instance, sandbox, user)

    def at_end(self, instance: SessionInstance, sandbox: Engine) -> None:
        """The run's turns are all done (the model's too): check every turn left."""
        self.start(instance)
        for user in sorted(self.checks.expects):
            if user not in self.done:
                self._check(instance, sandbox, user)

    def _check(self, instance: SessionInstance, sandbox: Engine, user: int) -> None:
        self.done.add(user)
        self.checks.after(instance.conversation, user, self.run_code(sandbox))
        self._keep_judge_records(instance)
        self.manager.store.put_instance(instance)

    def _keep_judge_records(self, instance: SessionInstance) -> None:
        grader = self.checks.grader
        keys = getattr(grader, "keys", None)
        if keys:
            instance.llm_records.extend(k for k in keys if k not in instance.llm_records)
            keys.clear()

    def samples(self, instance: SessionInstance, sample: int) -> None:
        """Ask for the other samples of the last message, and record their summary.

        Only the main run (``sample`` 0) does; each other sample is a run of its own.
        """
        last = len(self.snapshot.conversation) - 1
        expect = self.checks.expects.get(last)
        if sample or expect is None or expect.samples < 2:
            return
        per_sample = [_complete(expect, recorded(instance.conversation, last), instance)]
        for index in range(1, expect.samples):
            other = sample_run(self.manager, self.snapshot, index)
            per_sample.append(_complete(expect, recorded(other.conversation, last), other))
            instance.llm_records.extend(
                k for k in other.llm_records if k not in instance.llm_records
            )
            self.manager.store.remove_instance(other.instance_id)
        record(instance.conversation, last, summarise_samples(expect, per_sample))
        self.manager.store.put_instance(instance)


def sample_run(manager: Runs, snapshot: SessionSnapshot, sample: int) -> SessionInstance:
    """Run ``snapshot`` again as sample ``sample``, in a sandbox of its own; its instance."""
    make = cast("Callable[..., Runs]", type(manager))
    other = make(manager.store, approval=manager.approval, replay_mode=manager.replay_mode)
    other.sample = sample
    instance = other.create(snapshot)
    with contextlib.suppress(DomarkxError):  # a sample that fails is a failed sample
        other.execute(instance, snapshot)
    manager.refused |= other.refused
    return instance


def _complete(
    expect: Expect, results: list[Result] | None, instance: SessionInstance
) -> list[Result]:
    """A sample's results, one per check: a check that did not run failed."""
    found = list(results or [])
    why = f"not run: {instance.error}" if instance.error else "not run"
    for check in expect.checks[len(found) :]:
        found.append(Result(check.kind, False, why))
    return found[: len(expect.checks)]
