"""What sparc-agent keeps on disk: where (`paths`), the generations of each stack, the agent's
view, and how a set of files is replaced as one step (`commit`, `files`).

Owns: every state path and file format. Never spawns a process and never speaks D-Bus.
"""
