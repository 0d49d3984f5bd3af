"""What sparc-agent keeps on disk: where (`paths`, every state path), the generations of each
stack (`generations`) with their typed, versioned record (`meta`, migrated on read) and supervision
plan (`plan`), how files are written (`files`), and how a stack's unit files switch from one
generation to the next in one rename (`live`; `commit`, journaled per file, where quadlet < 5.3).

Owns: every state path and file format. Never spawns a process and never speaks D-Bus; never imports
the profile model, the renderer or the agent.
"""
