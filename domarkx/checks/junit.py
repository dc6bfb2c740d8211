"""JUnit XML for CI: one ``testsuite`` per session, one ``testcase`` per check.

The shape (the subset of the JUnit format that Jenkins, GitLab, GitHub
Actions reporters and pytest's own ``--junitxml`` agree on)::

    <testsuites name="domarkx" tests="N" failures="F" errors="E">
      <testsuite name="sessions/a.md" tests=".." failures=".." errors=".." skipped="0"
                 time="1.234" timestamp="2026-01-01T00:00:00">
        <testcase classname="sessions.a" name="line 12: contains: 4"
                  file="sessions/a.md" line="12" time="0"/>
        <testcase ...><failure type="check" message="...">detail</failure></testcase>
      </testsuite>
    </testsuites>

A session that could not run (a broken document, a replay miss) is one
``testcase`` named ``run`` with an ``error``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from domarkx.checks.results import Outcome
from domarkx.data.atomic import write_atomic


@dataclass
class SessionReport:
    """A session's checks, or why it did not run; ``seconds`` it took."""

    session: str
    outcomes: list[Outcome] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    timestamp: str = ""
    instance: str | None = None  # the run kept to look at (a failure), short id

    @property
    def failed(self) -> int:
        return sum(not o.result.passed for o in self.outcomes)


def classname(session: str) -> str:
    """``sessions/a/b.md`` -> ``sessions.a.b``, as JUnit readers group by dots."""
    stem = session[:-3] if session.endswith(".md") else session
    return stem.replace("/", ".").replace("\\", ".")


def to_xml(reports: list[SessionReport]) -> ET.Element:
    root = ET.Element("testsuites", name="domarkx")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for report in reports:
        errors = 1 if report.error is not None else 0
        tests = len(report.outcomes) + errors
        suite = ET.SubElement(
            root,
            "testsuite",
            name=report.session,
            tests=str(tests),
            failures=str(report.failed),
            errors=str(errors),
            skipped="0",
            time=f"{report.seconds:.3f}",
            timestamp=report.timestamp,
        )
        for outcome in report.outcomes:
            line = f"line {outcome.line}: " if outcome.line else ""
            case = ET.SubElement(
                suite,
                "testcase",
                classname=classname(report.session),
                name=f"{line}{outcome.label}",
                file=report.session,
                time="0",
            )
            if outcome.line:
                case.set("line", str(outcome.line))
            if not outcome.result.passed:
                failure = ET.SubElement(
                    case, "failure", type="check", message=outcome.result.detail
                )
                failure.text = f"{outcome.where}: {outcome.result.kind}: {outcome.result.detail}"
        if report.error is not None:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=classname(report.session),
                name="run",
                file=report.session,
                time=f"{report.seconds:.3f}",
            )
            error = ET.SubElement(case, "error", type="run", message=report.error.split("\n")[0])
            error.text = report.error
        totals["tests"] += tests
        totals["failures"] += report.failed
        totals["errors"] += errors
        total_time += report.seconds
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    return root


def write(path: Path, reports: list[SessionReport]) -> None:
    """Write the JUnit XML file atomically."""
    tree = to_xml(reports)
    ET.indent(tree)
    text = ET.tostring(tree, encoding="unicode", xml_declaration=False)
    write_atomic(path, '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n")
