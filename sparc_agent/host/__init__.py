"""The host: the processes sparc-agent spawns (`process`: podman, the quadlet generator, systemctl,
journalctl), what versions of podman, quadlet, systemd and which distribution it runs (`detect`, the
one detection), systemd's user manager over D-Bus (`systemd`), and a running container's own
processes, held by pidfd for a kill that spares podman and conmon (`payload`).

Owns: every subprocess (only `host.process` starts one) and the only D-Bus connection (`host.systemd`
is the only module that imports dbus-fast). Version types and feature tables are `sparc_agent.versions`.
Never imports: profile, render, state, apply, agent, probes, export, cli, doctor.
"""
