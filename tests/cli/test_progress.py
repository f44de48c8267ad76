"""The watch view: the progress line (steps, loss, ETA) and streamed text, from real event shapes."""
from __future__ import annotations

import io

from gpuq.cli.progress import Watcher, render_bar
from gpuq.common.schemas import JobEvent


def test_bar_shows_steps_percent_loss_and_eta() -> None:
    assert render_bar(12, 48, loss=0.43125, eta_s=75) == \
        "[######------------------] 12/48  25%  loss 0.4313  ETA 1:15"
    assert render_bar(3, 3) == "[########################] 3/3 100%"
    assert render_bar(0, 0).startswith("[------------------------] 0/0")


def test_eta_comes_from_the_event_timestamps_and_text_streams_to_stdout() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = Watcher(out, err)
    for i, (ms, done) in enumerate([(1_000_000, 1), (1_002_000, 3)]):
        view.on_event(JobEvent(id=f"{ms}-{i}", type="progress", data={"done": done, "total": 11, "loss": 1.5}))
    view.on_event(JobEvent(id="1002001-0", type="output", data={"text": "Hello"}))
    view.on_event(JobEvent(id="1002002-0", type="output", data={"text": " world"}))
    view.on_event(JobEvent(id="1002003-0", type="completed", data={}))
    assert "3/11" in err.getvalue() and "loss 1.5000" in err.getvalue() and "ETA 0:08" in err.getvalue()
    assert out.getvalue() == "Hello world\n" and err.getvalue().endswith("completed\n")
