"""The host: the processes sparc-agent spawns (podman, the quadlet generator, systemctl), what
versions of podman, quadlet and systemd it runs, and systemd's user manager over D-Bus.

Owns: every subprocess and the only D-Bus connection (`host.systemd` is the only module that
imports dbus-fast). Never imports the profile model or the renderer.
"""
