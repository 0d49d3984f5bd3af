"""`apply` and the operations on an applied stack, one module per step:

    run       the command: lock, recover, pull, secrets, record a generation, converge, rollback
    plan      which files change, which services restart                (reads only)
    write     stop what left, switch the files (state.commit), reload
    start     start/restart in dependency order                          (start.StartStep)
    verify    wait for each probe, or say why not with the log tail
    rollback  converge back to the previous healthy generation
    converge  plan -> write -> reload -> start -> verify, for one generation
    fastpath  the no-op answer without pydantic/jinja2, keyed on inputs and rendering code
    status, down   the commands on an applied stack by name

Owns: the only writer of unit files. Reaches the host only through `host/`.
"""
