"""Who is acting: the identity recorded in the audit trail and on catalog rows."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    id: str | None
    name: str

    @classmethod
    def system(cls) -> Actor:
        return cls("system", "ClinVault system")

    @classmethod
    def command_line(cls) -> Actor:
        """The operating-system user running the CLI on this host."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        host = socket.gethostname()
        return cls(f"os:{user}@{host}", f"{user}@{host} (command line)")
