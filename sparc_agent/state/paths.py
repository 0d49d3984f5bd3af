"""Every path sparc-agent reads or writes, in one place: the rootless XDG locations of the user.

$XDG_CONFIG_HOME/containers/systemd/     quadlets (render.QUADLET_DIR)
$XDG_CONFIG_HOME/systemd/user/           plain user units (render.UNIT_DIR)
$XDG_CONFIG_HOME/sparc-agent/profiles/   profiles the agent applies at start
$XDG_STATE_HOME/sparc-agent/             STATE_DIR, mode 0700
    STACK/generations/000007/            one applied generation (state.generations)
    STACK/current -> generations/000007  the generation that runs
    STACK/live -> generations/000007/files  the files systemd and quadlet read (state.live)
    STACK/empty/                         what `live` names while the stack has no files
    STACK/commit.journal                 an unfinished file switch (state.commit)
    STACK/apply.lock                     flock of the apply in charge; holds its pid
    STACK/secret.salt                    salt of the secret fingerprints (0600)
    STACK/agent-state.json               the running agent's view, for `status`
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

STATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600


@dataclass(frozen=True)
class StackPaths:
    """The state files of one stack (file names in the module docstring)."""

    root: Path
    generations: Path = field(init=False)
    current: Path = field(init=False)
    journal: Path = field(init=False)
    lock: Path = field(init=False)
    salt: Path = field(init=False)
    agent_state: Path = field(init=False)
    inputs: Path = field(init=False)
    live: Path = field(init=False)
    empty: Path = field(init=False)

    def __post_init__(self) -> None:
        files = {
            "generations": "generations",
            "current": "current",
            "journal": "commit.journal",
            "lock": "apply.lock",
            "salt": "secret.salt",
            "agent_state": "agent-state.json",
            "inputs": "inputs.json",
            "live": "live",
            "empty": "empty",
        }
        for attribute, name in files.items():
            object.__setattr__(self, attribute, self.root / name)

    @property
    def name(self) -> str:
        return self.root.name

    def current_target(self) -> str | None:
        """Where `current` points (a readlink: what the agent polls to notice a new generation)."""
        try:
            return os.readlink(self.current)
        except OSError:
            return None

    def current_number(self) -> int | None:
        return _number(self.current_target())

    def live_number(self) -> int | None:
        """The generation whose files `live` names (None: none, or an adoption copy)."""
        try:
            return _number(str(Path(os.readlink(self.live)).parent))
        except OSError:
            return None


def _number(target: str | None) -> int | None:
    if target is None:
        return None
    try:
        return int(Path(target).name)
    except ValueError:
        return None


@dataclass(frozen=True)
class Paths:
    config_home: Path  # quadlets under containers/systemd/, user units under systemd/user/
    state_home: Path  # STATE_DIR = state_home/sparc-agent

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Paths:
        home = Path(env.get("HOME") or Path.home())
        config = env.get("XDG_CONFIG_HOME") or str(home / ".config")
        state = env.get("XDG_STATE_HOME") or str(home / ".local/state")
        return cls(Path(config), Path(state))

    @property
    def state_dir(self) -> Path:
        return self.state_home / "sparc-agent"

    def stack(self, stack: str) -> StackPaths:
        return StackPaths(self.state_dir / stack)

    def stack_state(self, stack: str) -> Path:
        return self.stack(stack).root

    def stacks(self) -> Iterator[StackPaths]:
        """Every stack with a state directory (applied at least once, or being applied)."""
        if self.state_dir.is_dir():
            for entry in sorted(self.state_dir.iterdir()):
                if entry.is_dir() and not entry.name.startswith("."):
                    yield StackPaths(entry)

    @property
    def profiles_dir(self) -> Path:
        """Profiles the agent applies at start (install.sh --profile puts one here)."""
        return self.config_home / "sparc-agent" / "profiles"
