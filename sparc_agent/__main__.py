"""`python -m sparc_agent`: the same as the `sparc-agent` console script."""

from sparc_agent.cli import main

main()
