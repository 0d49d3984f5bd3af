"""The long-running agent: the runner (event loop, D-Bus watch, probes, actions), the pure
supervisor state machine (which owns all per-service sub-state), sd_notify and the journal log.

Never imports pydantic or jinja2 (the agent stays small): it reads what `apply` recorded.
"""
