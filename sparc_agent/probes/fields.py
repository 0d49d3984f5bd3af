"""Field types for probe specs: plain annotations the profile's validation honours.

A spec is a frozen dataclass that the agent builds without pydantic (it must stay small); the
profile validates the same class's fields when it loads a profile, because each type below carries a
hook that pydantic asks for its schema. pydantic_core is imported only inside that hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from sparc_agent.profile import scalars


class Checked:
    """Run `check` (returns the value or raises ValueError) before the type's own validation."""

    def __init__(self, check: Callable[[Any], Any]) -> None:
        self.check = check

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(self.check, handler(source))


class IntRange:
    """An integer (strictly: no "80", no true) within lo..hi."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import core_schema

        return core_schema.int_schema(ge=self.lo, le=self.hi, strict=True)


Port = Annotated[int, IntRange(1, 65535)]
HttpPath = Annotated[str, Checked(scalars.http_path)]
Text = Annotated[str, Checked(scalars.text)]
Argv = Annotated[tuple[str, ...], Checked(scalars.argv)]
StatusRange = Annotated[tuple[int, int], Checked(scalars.status_range)]
