"""The profile: YAML source with a line for every key, the typed model, overlays and `--set`, and
the rules that relate one part of a profile to another.

Owns: everything a profile means. Pure: never touches the bus, a subprocess or the state directory;
imports nothing of sparc_agent but `errors` and the table of probe kinds (`probes.kinds`).
Deliberately empty here, so that importing `profile.source` (the no-op fast path does) does not
import pydantic.

Never imports: host, render, state, apply, agent, export, cli, doctor.
"""
