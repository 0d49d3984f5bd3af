"""`apply` and the operations on an applied stack: plan, write, reload, pull, start in order,
verify, record or roll back; the no-op fast path; status and down.

Owns: the only writer of unit files. Reaches the host only through `host/`.
"""
