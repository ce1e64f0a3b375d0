"""One progress display for every long command: training, perplexity, loading, preparing data.

On a terminal it is one line, redrawn in place, that always fits the terminal's width:

    train [##########..........] 1200/2000  loss 1.9821  lr 4.2e-04  16,137 tok/s  ETA 0:49

When the output is a file or a pipe (a log, CI) it prints a plain line every `every` seconds
instead, so a log stays readable. The rate is the *current* one (an average over the last few
seconds), not the average since the start, and the ETA follows from it.

Lines that must stay (evaluation results, warnings) go through `write()`: they are printed
(on stdout, or through `echo`) above the bar, even when the bar itself is off (`--quiet`).
"""
from __future__ import annotations

import shutil
import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """progress = Progress(total, desc="train", unit="tok"); progress.update(done, loss="1.98")."""

    def __init__(self, total: int, desc: str = "", unit: str = "it", enabled: bool = True,
                 start: int = 0, every: float = 10.0, window: float = 5.0, stream=None,
                 scale: float = 1.0, echo=None):
        # scale: units per count, e.g. tokens per training iteration: the bar counts
        # iterations and shows the rate in tokens/s
        self.total, self.desc, self.unit, self.scale = max(0, int(total)), desc, unit, scale
        self.echo = echo if echo is not None else (lambda text: print(text, flush=True))
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every, self.window = every, window
        self.done = start
        self.started = time.perf_counter()
        self._last_draw = -float("inf")
        self._shown = False                       # is a bar drawn on the current terminal line?
        self._samples = [(self.started, start)]   # (time, done) over the last `window` seconds
        self._rate_override = None

    # -- the numbers ------------------------------------------------------------------------
    def count_rate(self) -> float:
        """Counts per second over the last `window` seconds (0 until two points are known)."""
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def rate(self) -> float:
        """Units per second: the rate given to update(), or the measured one times `scale`."""
        if self._rate_override is not None:
            return self._rate_override
        return self.count_rate() * self.scale

    def update(self, done: int, rate: float | None = None, **fields) -> None:
        """Move to `done` (an absolute count). `fields` are shown as `name value` after the count,
        in the order given. `rate` (units/s), if given, replaces the measured one in the display
        (the ETA always comes from the measured count rate)."""
        now = time.perf_counter()
        self.done = done
        self._rate_override = rate
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.pop(0)
        if not self.enabled:
            return
        finished = done >= self.total
        if now - self._last_draw < (0.1 if self.tty else self.every) and not finished:
            return
        self._last_draw = now
        self._draw(self.line(fields))

    def show(self, **fields) -> None:
        """Redraw the bar with `fields` (e.g. evaluating="40/400 batches") without moving it:
        long work between two updates stays visible."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_draw < (0.1 if self.tty else self.every):
            return
        self._last_draw = now
        self._draw(self.line(fields))

    def line(self, fields: dict, width: int | None = None) -> str:
        """The progress line, at most `width` characters (the terminal's width minus one)."""
        width = (shutil.get_terminal_size((80, 24)).columns - 1) if width is None else width
        rate = self.rate()
        parts = [f"{self.done:,}/{self.total:,}"]
        parts += [f"{k.replace('_', ' ')} {v}" for k, v in fields.items()]
        if rate > 0:
            parts.append(f"{rate:,.0f} {self.unit}/s" if rate >= 10 else
                         f"{rate:.2f} {self.unit}/s")
            counts_per_s = self.count_rate()
            if self.done < self.total and counts_per_s > 0:
                parts.append(f"ETA {_clock((self.total - self.done) / counts_per_s)}")
        text = "  ".join(parts)
        head = f"{self.desc} " if self.desc else ""
        room = width - len(head) - len(text) - 3           # "[" + bar + "] "
        if room >= 10:
            bar = min(room, 30)
            filled = int(bar * self.done / self.total) if self.total else bar
            return f"{head}[{'#' * filled}{'.' * (bar - filled)}] {text}"[:width]
        return (head + text)[:width]                        # a narrow terminal: no bar

    # -- the output -------------------------------------------------------------------------
    def _draw(self, line: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False

    def write(self, text: str) -> None:
        """A line that stays, printed on stdout above the bar (also when the bar is off)."""
        self._clear()
        self.echo(text)
        self._last_draw = -float("inf")                    # redraw the bar at the next update

    def close(self) -> None:
        self._clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
