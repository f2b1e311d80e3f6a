"""One line per step for commands that change the machine (``shunt setup``, ``shunt service``)."""

from __future__ import annotations

import dataclasses

DONE, ALREADY, SKIPPED, FAILED = "done", "already done", "skipped", "failed"


@dataclasses.dataclass(frozen=True)
class StepResult:
    """One step's outcome. ``outcome`` is :data:`DONE`, :data:`ALREADY`, :data:`SKIPPED` or
    :data:`FAILED`; ``detail`` says why (skipped, failed) or what (done)."""

    step: str
    outcome: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        """Whether the step failed."""
        return self.outcome == FAILED

    def line(self) -> str:
        """The line printed for it: ``"<step>: <outcome> (<detail>)"``."""
        return f"{self.step}: {self.outcome}" + (f" ({self.detail})" if self.detail else "")
