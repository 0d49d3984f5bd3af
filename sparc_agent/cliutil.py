"""What every CLI module shares: our errors become one clear message and their exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from .errors import SparcError

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(func: F) -> F:
    """Our own errors become one clear message and their exit code, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SparcError as exc:
            click.echo(str(exc), err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]
