"""How long-running work reports its progress, without knowing who draws it.

The core (building features, tuning, training) tells a :class:`ProgressCallback` when a task
starts, how far it got and when it is done; the CLI adapts that to terminal bars, a server can
log it, a notebook can ignore it. :data:`NO_PROGRESS`, the default, does nothing.
"""

from __future__ import annotations

from typing import Protocol


class ProgressTask(Protocol):
    """One task being watched: advanced, relabelled and finished by the work it describes."""

    def advance(self, amount: float = 1) -> None:
        """``amount`` more units of the task's total are done."""

    def update(self, description: str | None = None, completed: float | None = None) -> None:
        """Relabel the task, or set how many units are done so far."""

    def finish(self, description: str | None = None) -> None:
        """The task is done (all of its total), optionally with a last label."""


class ProgressCallback(Protocol):
    """Where work reports progress: ``start`` returns the task to advance."""

    def start(self, description: str, total: float | None = None) -> ProgressTask:
        """A new task of ``total`` units (None: unknown), labelled ``description``."""


class _NoTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, description: str | None = None, completed: float | None = None) -> None:
        pass

    def finish(self, description: str | None = None) -> None:
        pass


class _NoProgress:
    def start(self, description: str, total: float | None = None) -> ProgressTask:
        return _NoTask()


NO_PROGRESS: ProgressCallback = _NoProgress()
"""Progress reported to no one: the default of everything that takes a ``progress``."""
