"""Parameter values for macros: given ones, else doit's command-line variables.

A leaf module: the task list (``tasks``) and the expand stage (``stages``)
both look values up through it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import doit


class CommandLineParams(Mapping[str, str]):
    """Parameter values by name: ``known`` ones, else doit's command-line variables.

    doit answers one name at a time (``doit.get_var``) and cannot list its
    variables, so this mapping cannot be iterated; instead it records every
    name it was asked (``asked``), which is what a session's expansion
    depends on.
    """

    def __init__(self, known: Mapping[str, str] | None = None) -> None:
        self.known = dict(known or {})
        self.asked: set[str] = set()

    def get_value(self, name: str) -> str | None:
        self.asked.add(name)
        if name in self.known:
            return self.known[name]
        value = doit.get_var(name)
        return None if value is None else str(value)

    def __getitem__(self, name: str) -> str:
        value = self.get_value(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get_value(name) is not None

    def __iter__(self) -> Iterator[str]:
        raise TypeError("doit cannot list its command-line variables; ask for one by name")

    def __len__(self) -> int:
        raise TypeError("doit cannot list its command-line variables; ask for one by name")
