"""Collected data problems: every problem of a file is reported at once, naming file and line."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..common.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One data problem: the file, its 1-based line (0 when the whole file is meant) and what is wrong."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass
class Problems:
    """Problems found so far; stops recording after `limit` (the count goes on)."""

    limit: int = 1000
    items: list[Problem] = field(default_factory=list)
    count: int = 0

    def add(self, file, line: int, message: str) -> None:
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append(Problem(str(file), int(line), message))

    def __bool__(self) -> bool:
        return self.count > 0

    def raise_if_any(self, what: str, shown: int = 20) -> None:
        """Log every recorded problem, then raise one InputError listing the first `shown`."""
        if not self:
            return
        for p in self.items:
            log.error("%s", p)
        head = "\n  ".join(str(p) for p in self.items[:shown])
        more = f"\n  ... and {self.count - shown} more (all recorded ones in this job's log)" if self.count > shown else ""
        raise InputError(f"{what}: {self.count} problem(s); nothing downstream runs until they are fixed:\n  {head}{more}")
