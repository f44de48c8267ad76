"""``gpuq ui``: submit text and image jobs from a browser and watch them run.

Everything goes through the Python client (``client.Client``), exactly as another service would: the UI
is a demo of the API, not a side door. The image tab appears when the deployment registers the
``image`` job kind (``GET /v1/kinds``).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from gpuq.cli.progress import render_bar
from gpuq.client import Client, GpuqError, JobEvent, JobRecord, _base

log = logging.getLogger(__name__)
TEXT_TASKS = ["text-generation", "text-classification", "feature-extraction"]
Update = tuple[str, str, Any]


class Runner:
    """Runs one job for the UI and turns its events into (status, text, result) updates."""

    def __init__(self, api_url: str | None, api_key: str | None) -> None:
        self.api_url, self.api_key = api_url, api_key

    def client(self) -> Client:
        return Client(self.api_url, self.api_key)

    def text(self, task: str, model: str, prompt: str, max_new_tokens: float,
             priority: str) -> Iterator[Update]:
        """Submit an inference job and stream its progress, text and result."""
        if not model.strip() or not prompt.strip():
            yield "Enter a model and some text first.", "", None
            return
        params: dict[str, Any] = {"task": task}
        if task == "text-generation":
            params.update(max_new_tokens=int(max_new_tokens), stream=True)
        yield from self._run("inference", model.strip(), prompt, params, priority)

    def image(self, model: str, prompt: str, steps: float, extra: str, priority: str) -> Iterator[Update]:
        """Submit an image job; the result shows the image artifacts it produced."""
        try:
            params = {"num_inference_steps": int(steps), **(json.loads(extra) if extra.strip() else {})}
        except ValueError as exc:
            yield f"Extra params are not JSON: {exc}", "", None
            return
        for status, text, result in self._run("image", model.strip(), prompt, params, priority):
            yield status, text, result if isinstance(result, list) else None

    def _run(self, kind: str, model: str, inputs: Any, params: dict[str, Any],
             priority: str) -> Iterator[Update]:
        text = ""
        try:
            with self.client() as gpuq:
                job = gpuq.submit(kind, model, inputs, params, priority=priority)
                yield _status(job.id, "queued"), text, None
                for event in gpuq.events(job.id):
                    text += str(event.data.get("text", "")) if event.type == "output" else ""
                    yield _status(job.id, event.type, event), text, None
                done = gpuq.get(job.id)
                result = self._result(gpuq, done)
                yield _status(job.id, done.status, done=done), text or _as_text(done), result
        except GpuqError as exc:
            yield f"**Refused:** {exc.message}" + (f" (`{exc.field}`)" if exc.field else ""), text, None

    def _result(self, gpuq: Client, job: JobRecord) -> Any:
        images = [a for a in job.artifacts if a.content_type.startswith("image/")]
        if not images:
            if job.status == "succeeded":
                return job.result
            return job.error.model_dump() if job.error else None
        folder = tempfile.mkdtemp(prefix="gpuq-ui-")
        return [str(gpuq.download_artifact(job.id, a.name, folder, sha256=a.sha256)) for a in images]


def _status(job_id: str, state: str, event: JobEvent | None = None, done: JobRecord | None = None) -> str:
    line = f"**Job** `{job_id}` · **{_STATE.get(state, state)}**"
    if event is not None and event.type == "progress":
        data = event.data
        line += f"\n\n`{render_bar(float(data.get('done', 0)), float(data.get('total', 0) or 0))}`"
    if done is not None:
        t = done.timings
        if done.status == "succeeded" and t.run_ms is not None:
            line += (f"\n\nwaited {t.queue_wait_ms or 0:.0f} ms · model load {t.model_load_ms or 0:.0f} ms · "
                     f"ran {t.run_ms:.0f} ms")
        if done.error:
            line += f"\n\n{done.error.type}: {done.error.message}"
    return line


_STATE = {"queued": "queued", "started": "running", "progress": "running", "log": "running",
          "output": "generating", "completed": "succeeded", "succeeded": "succeeded", "failed": "failed",
          "cancelled": "cancelled"}


def _as_text(job: JobRecord) -> str:
    result = job.result
    if isinstance(result, dict) and "generated_text" in result:
        return str(result["generated_text"])
    return ""


def build(runner: Runner, model: str | None, kinds: list[str]) -> Any:
    """The Gradio Blocks app."""
    import gradio as gr

    with gr.Blocks(title="gpuq demo") as app:
        gr.Markdown("# gpuq demo\nJobs go through the gpuq API and run on a worker; "
                    "progress streams back live.")
        with gr.Tab("Text"):
            task = gr.Dropdown(TEXT_TASKS, value=TEXT_TASKS[0], label="Task", elem_id="task")
            model_box = gr.Textbox(value=model or "", label="Model (Hub id or a directory the workers allow)",
                                   elem_id="model")
            prompt = gr.Textbox(lines=3, label="Input text", placeholder="Once upon a time", elem_id="prompt")
            with gr.Row():
                tokens = gr.Slider(1, 256, value=32, step=1, label="Max new tokens", elem_id="max-new-tokens")
                priority = gr.Radio(["high", "normal", "low"], value="normal", label="Priority")
            submit = gr.Button("Submit", variant="primary", elem_id="submit")
            status = gr.Markdown("Nothing submitted yet.", elem_id="status")
            output = gr.Textbox(lines=4, label="Generated text", interactive=False, elem_id="output")
            result = gr.JSON(label="Result", elem_id="result")
            submit.click(runner.text, [task, model_box, prompt, tokens, priority], [status, output, result])
        if "image" in kinds:
            _image_tab(gr, runner)
    return app


def _image_tab(gr: Any, runner: Runner) -> None:
    with gr.Tab("Image"):
        model_box = gr.Textbox(label="Diffusion model", elem_id="image-model")
        prompt = gr.Textbox(lines=2, label="Prompt", elem_id="image-prompt")
        with gr.Row():
            steps = gr.Slider(1, 100, value=20, step=1, label="Steps")
            priority = gr.Radio(["high", "normal", "low"], value="normal", label="Priority")
        extra = gr.Textbox(label="Extra params (JSON)", placeholder='{"seed": 0}')
        submit = gr.Button("Generate", variant="primary", elem_id="image-submit")
        status = gr.Markdown("Nothing submitted yet.", elem_id="image-status")
        log_box = gr.Textbox(visible=False)
        gallery = gr.Gallery(label="Images", elem_id="image-gallery")
        submit.click(runner.image, [model_box, prompt, steps, extra, priority], [status, log_box, gallery])


def serve(api_url: str | None, api_key: str | None, host: str, port: int, model: str | None) -> int:
    """Start the UI and block until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    runner = Runner(api_url, api_key)
    try:
        with runner.client() as gpuq:
            kinds = [k.kind for k in gpuq.kinds()]
    except GpuqError as exc:
        log.warning("cannot list job kinds (%s); offering text jobs only", exc.message)
        kinds = ["inference"]
    app = build(runner, model, kinds)
    print(f"gpuq ui on http://{host}:{port} (API {_base.api_url(api_url)})", flush=True)
    app.queue().launch(server_name=host, server_port=port, share=False, quiet=True, footer_links=[])
    return 0
