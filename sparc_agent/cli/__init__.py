"""The `sparc-agent` command line (click). Owns: flags, exit codes, what is printed.

Thin: each command parses its flags and calls one function of the packages below it. Nothing else
imports from here. Kept light (the group is imported only when the command runs).
"""

from __future__ import annotations


def main() -> None:
    """The console script's entry point."""
    from sparc_agent.cli.main import main as run

    run()
