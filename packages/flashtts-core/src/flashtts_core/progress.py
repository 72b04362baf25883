"""Progress of long steps (loading a model, converting, writing a tiny model), one helper for all.

On a terminal (stderr is a TTY) a tqdm bar counts the steps and each finished step is printed above
it; otherwise, for log files and collectors, each finished step is one INFO log line::

    Spark-TTS [2/3] BiCodec audio tokenizer from /models/Spark/BiCodec on cuda:0, float32 (4.1 s)
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional, Union


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def _screen() -> tuple[int, int]:
    """The terminal's (columns, rows); a pseudo-terminal that reports 0x0 counts as 100x24 (tqdm
    hides a bar whose line is past the last row)."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
        return size.columns or 100, size.lines or 24
    except (AttributeError, OSError, ValueError):
        return 100, 24


class Progress:
    """``total`` steps of one job called ``title``; ``done(message)`` marks one finished."""

    def __init__(
        self, title: str, total: int, logger: Union[logging.Logger, str] = "flashtts", terminal: Optional[bool] = None
    ):
        self.title = title
        self.total = total
        self.count = 0
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self._start = time.perf_counter()
        self._lock = threading.Lock()  # steps may finish in worker threads
        self._bar = None
        if _stderr_is_terminal() if terminal is None else terminal:
            from tqdm import tqdm  # only where a bar is drawn

            columns, rows = _screen()
            self._bar = tqdm(total=total, desc=title, unit="step", file=sys.stderr, ncols=columns, nrows=rows)

    def done(self, message: str, *args: object) -> None:
        """One step finished; ``message % args`` says what it was (what, from where, on which device)."""
        with self._lock:
            self.count += 1
            text = message % args if args else message
            line = f"{self.title} [{self.count}/{self.total}] {text} ({time.perf_counter() - self._start:.1f} s)"
            if self._bar is not None:
                self._bar.write(line, file=sys.stderr)
                self._bar.set_postfix_str(text[:60], refresh=False)
                self._bar.update(1)
            else:
                self.logger.info("%s", line)

    @contextmanager
    def step(self, message: str, *args: object) -> Iterator[None]:
        """A step as a block: shown as running on the bar, ``done`` when the block ends without error."""
        if self._bar is not None:
            text = message % args if args else message
            self._bar.set_postfix_str(f"{text[:60]} …")
        yield
        self.done(message, *args)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def progress(title: str, total: int, logger: Union[logging.Logger, str] = "flashtts") -> Iterator[Progress]:
    """``with progress("Spark-TTS", 3) as p: ...; p.done("tokenizer from %s", path)``."""
    p = Progress(title, total, logger)
    try:
        yield p
    finally:
        p.close()
