"""``gpuq watch``: a live progress line (steps, loss, ETA) and streamed text, drawn from a job's events."""
from __future__ import annotations

import sys
from typing import Any, TextIO

from gpuq.common.schemas import JobEvent

BAR_WIDTH = 24


def event_time(event: JobEvent) -> float:
    """Seconds since the epoch at which the event was appended (from its stream id)."""
    return int(event.id.split("-")[0]) / 1000


def render_bar(done: float, total: float, loss: float | None = None, eta_s: float | None = None,
               width: int = BAR_WIDTH) -> str:
    """``[#########---------------] 12/32  37%  loss 0.4312  ETA 0:20``."""
    frac = min(max(done / total, 0.0), 1.0) if total else 0.0
    filled = int(round(frac * width))
    parts = [f"[{'#' * filled}{'-' * (width - filled)}] {_num(done)}/{_num(total)} {frac:4.0%}"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if eta_s is not None:
        parts.append(f"ETA {_clock(eta_s)}")
    return "  ".join(parts)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Watcher:
    """Turns events into terminal output: status lines and the bar on ``err``, generated text on ``out``."""

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.out, self.err = out, err
        self.live = err.isatty()
        self.first_progress: tuple[float, float] | None = None
        self.streamed = False  # text written to ``out`` and not yet ended by a newline
        self.had_output = False
        self._bar_shown = False
        self._last_tenth = -1

    def on_event(self, event: JobEvent) -> None:
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:
            handler(event)

    def _line(self, text: str) -> None:
        if self._bar_shown and self.live:
            self.err.write("\r\033[K")
            self._bar_shown = False
        if self.streamed:
            self.out.write("\n")
            self.out.flush()
            self.streamed = False
        self.err.write(text + "\n")
        self.err.flush()

    def _on_queued(self, event: JobEvent) -> None:
        self._line(f"queued on {event.data.get('queue', '?')}")

    def _on_started(self, event: JobEvent) -> None:
        self._line(f"started on {event.data.get('worker', '?')} (attempt {event.data.get('attempt', 1)})")

    def _on_log(self, event: JobEvent) -> None:
        self._line(f"log: {event.data.get('message', '')}")

    def _on_output(self, event: JobEvent) -> None:
        text = event.data.get("text")
        if isinstance(text, str):
            self.out.write(text)
            self.out.flush()
            self.streamed = self.had_output = True

    def _on_progress(self, event: JobEvent) -> None:
        data: dict[str, Any] = event.data
        done, total = float(data.get("done", 0)), float(data.get("total", 0) or 0)
        now = event_time(event)
        if self.first_progress is None:
            self.first_progress = (now, done)
        t0, d0 = self.first_progress
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else None
        eta = (total - done) / rate if rate else None
        loss = data.get("loss")
        bar = render_bar(done, total, float(loss) if isinstance(loss, int | float) else None, eta)
        if self.live and not self.streamed:
            self.err.write("\r\033[K" + bar)
            self.err.flush()
            self._bar_shown = True
        elif not self.streamed and (tenth := int(done / total * 10) if total else 0) != self._last_tenth:
            self._last_tenth = tenth  # not a terminal: one line per tenth of the way, not per step
            self.err.write(bar + "\n")
            self.err.flush()

    def _on_completed(self, event: JobEvent) -> None:
        self._line("completed")

    def _on_failed(self, event: JobEvent) -> None:
        error = event.data.get("error") or {}
        self._line(f"failed: {error.get('type', 'error')}: {error.get('message', '')}")

    def _on_cancelled(self, event: JobEvent) -> None:
        self._line(f"cancelled ({event.data.get('reason', 'on request')})")
