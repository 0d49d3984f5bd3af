"""Where sparc-agent reads and writes: the rootless XDG locations of the user running it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    config_home: Path  # quadlets under containers/systemd/, user units under systemd/user/
    state_home: Path  # generations, journals, locks under sparc-agent/STACK/

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Paths:
        home = Path(env.get("HOME") or Path.home())
        config = env.get("XDG_CONFIG_HOME") or str(home / ".config")
        state = env.get("XDG_STATE_HOME") or str(home / ".local/state")
        return cls(Path(config), Path(state))

    def stack_state(self, stack: str) -> Path:
        return self.state_home / "sparc-agent" / stack

    @property
    def profiles_dir(self) -> Path:
        """Profiles the agent applies at start (install.sh --profile puts one here)."""
        return self.config_home / "sparc-agent" / "profiles"
