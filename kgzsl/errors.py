"""The one exception type kgzsl raises for bad input: its message names the input and what to do."""

from __future__ import annotations

import math


class KgzslError(ValueError):
    """Bad input or a missing resource. The CLI prints the message on one line and exits 2.

    ``parameter``: the Python parameter a message starts with (e.g. ``"top"`` in "top must be at least 1"),
    so that the ``kgzsl`` command can name its flag instead (``--top``).
    """

    def __init__(self, *args: object, parameter: str | None = None) -> None:
        super().__init__(*args)
        self.parameter = parameter


def check_number(name: str, value: float, *, at_least: float | None = None, above: float | None = None,
                 below: float | None = None, meaning: str = "") -> None:
    """Refuse parameter ``name`` (a KgzslError naming it) when ``value`` is NaN or infinite, under ``at_least``,
    not above ``above`` or not below ``below``; ``meaning`` explains the bounds (e.g. " (0: never stop early)")."""
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    if not math.isfinite(value):
        raise KgzslError(f"{name} must be a finite number{meaning}, got {shown}", parameter=name)
    if at_least is not None and value < at_least:
        raise KgzslError(f"{name} must be at least {at_least:g}{meaning}, got {shown}", parameter=name)
    if above is not None and not value > above:
        raise KgzslError(f"{name} must be above {above:g}{meaning}, got {shown}", parameter=name)
    if below is not None and not value < below:
        raise KgzslError(f"{name} must be below {below:g}{meaning}, got {shown}", parameter=name)
