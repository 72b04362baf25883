"""CLI commands that plugins add to ``flashtts`` through the ``register_commands`` hook."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Callable, Optional

# What a command does once its arguments are parsed: returns the exit status.
CommandRunner = Callable[[argparse.Namespace], int]
# Adds a command's arguments to its parser and returns its runner; must import nothing heavy.
CommandConfigure = Callable[[argparse.ArgumentParser], CommandRunner]

_WORD = re.compile(r"[a-z0-9][a-z0-9_-]*")


class CommandError(Exception):
    """A user error in a plugin command: printed as one line ``flashtts NAME: error: MESSAGE``, exit status 2."""


@dataclass(frozen=True)
class Command:
    """One registered command: ``name`` is its words after ``flashtts`` ("convert gguf")."""

    name: str
    configure: CommandConfigure
    help: str = ""
    description: Optional[str] = None
    plugin: Optional[str] = None

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.name.split())


def command_name(name: str) -> str:
    """``name`` with single spaces between its words; a ValueError for a name the CLI cannot take."""
    words = str(name).split()
    if not words or not all(_WORD.fullmatch(w) for w in words):
        raise ValueError(f"invalid command name {name!r}: lower-case words of letters, digits, '-' or '_'")
    return " ".join(words)
