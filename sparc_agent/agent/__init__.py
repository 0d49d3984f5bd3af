"""The long-running agent: the runner (event loop, D-Bus watch, probes, actions), the pure
supervisor state machine (which owns all per-service sub-state), sd_notify and the journal log.

The agent stays small: it reads what `apply` recorded.
Never imports: pydantic, jinja2, cli.
"""
