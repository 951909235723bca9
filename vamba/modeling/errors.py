"""`UsageError`: the user's input is wrong (an option value, a path, a file's content), not the code.

The command line (`vamba.cli.run`) prints it as one line naming what is wrong and what is expected, with exit code
2, where any other exception is a bug and keeps its traceback. In the lowest layer so that every part may raise it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


class UsageError(ValueError):
    """A bad option value, path or input file; the message names it and what is expected (a ValueError, so code
    that catches ValueError keeps working)."""


class ArgParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are `UsageError`s (one line on the command line, not the usage)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def check_checkpoint(path: str | Path, option: str, hub_ids: bool = True) -> None:
    """`UsageError` naming `option` unless `path` is a folder with config.json or (`hub_ids`) may be a Hub id."""
    text, folder = str(path), Path(path).expanduser()
    hub_id = hub_ids and not folder.exists() and text.count("/") == 1 and not text.startswith(("/", ".", "~"))
    if not ((folder / "config.json").is_file() or hub_id):
        raise UsageError(f"{option}={text}: {'no config.json in that folder' if folder.is_dir() else 'no such folder'}"
                         f" (expected a checkpoint folder with config.json{', or a Hugging Face model id' * hub_ids})")
