"""Progress of long steps on stderr, wherever stderr goes.

On a terminal: tqdm's bar. Anywhere else (a log file, CI, a notebook's captured stream) tqdm's ``disable=None``
printed nothing, so a 5-minute command was silent until its table; there a plain line is written when a step
starts, every ``EVERY_S`` seconds while it runs, and when it ends. ``TQDM_DISABLE`` silences both.
"""

import os
import sys
import time

EVERY_S = 5.0


class _Lines:
    """tqdm's interface (update, set_postfix_str, close) as whole lines: readable in any log."""

    def __init__(self, total: int, desc: str, unit: str, stream) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.done, self.postfix, self.started = 0, "", time.monotonic()
        self.last = self.started
        self._write()

    def _write(self) -> None:
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        elapsed = time.monotonic() - self.started
        print(f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}{share}{extra}, {elapsed:.0f} s",
              file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if time.monotonic() - self.last >= EVERY_S:
            self.last = time.monotonic()
            self._write()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        self._write()


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def steps(total: int, desc: str, unit: str = "step"):
    """A progress reporter for ``total`` units of work (update / set_postfix_str / close)."""
    stream = sys.stderr
    if os.environ.get("TQDM_DISABLE") or stream is None:
        return _Silent()
    if stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream)
    return _Lines(total, desc, unit, stream)
