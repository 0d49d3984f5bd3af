"""What sparc-agent keeps on disk: where (`paths`, every state path), the generations of each
stack (`generations`) with their typed, versioned record (`meta`, migrated on read) and supervision
plan (`plan`), and how files are written (`files`) and a set of them replaced as one step (`commit`).

Owns: every state path and file format. Never spawns a process and never speaks D-Bus; never imports
the profile model, the renderer or the agent.
"""
