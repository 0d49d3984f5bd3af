"""systemd user unit templates, shipped as package data (see pyproject.toml)."""
