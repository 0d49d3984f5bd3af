"""sparc-agent: run a multi-container GPU stack as rootless systemd services via Podman quadlets."""

__version__ = "0.1.0"
