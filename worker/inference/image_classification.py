"""image-classification: images (base64, or bytes of an upload) through the model's image processor and
classification head."""
from __future__ import annotations

import io
from typing import Any

from gpuq.common.jobs.inference import ImageClassificationParams
from gpuq.common.jobs.inputs import decode_image
from gpuq.worker.inference.base import register_task
from gpuq.worker.inference.base import (
    LoadSpec,
    SimpleTask,
    TextModel,
    bad_input,
    label_of,
    load_pretrained,
    no_grad,
)
from gpuq.worker.inference.text_classification import scores

MAX_IMAGE_BYTES = 20_000_000
MAX_PIXELS = 50_000_000


class ImageClassification(SimpleTask):
    name = "image-classification"
    loader = "image-classification"

    def load(self, spec: LoadSpec) -> Any:
        return load_pretrained(spec, "AutoModelForImageClassification", processor="AutoImageProcessor")

    def prepare(self, resident: TextModel, inputs: list[Any], params: ImageClassificationParams) -> list[Any]:
        """Decode every image on the job's own thread: a corrupt one fails this job only."""
        from PIL import Image, UnidentifiedImageError

        images = []
        for i, value in enumerate(inputs):
            try:
                raw = value if isinstance(value, bytes) else decode_image(value, f"inputs.{i}", MAX_IMAGE_BYTES)
                image = Image.open(io.BytesIO(raw))
                if image.width * image.height > MAX_PIXELS:
                    raise bad_input(i, f"image larger than {MAX_PIXELS} pixels")
                images.append(image.convert("RGB"))
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise bad_input(i, f"not a readable image ({exc})") from None
        return images

    def forward(self, resident: TextModel, items: list[Any], params: ImageClassificationParams,
                stream: Any) -> list[Any]:
        batch = resident.tokenizer(images=items, return_tensors="pt").to(resident.device)
        batch = {k: v.to(resident.model.dtype) if v.is_floating_point() else v for k, v in batch.items()}
        with no_grad():
            logits = resident.model(**batch).logits.float().cpu()
        return list(logits)

    def finish(self, resident: TextModel, raw: Any, params: ImageClassificationParams) -> Any:
        probs = scores(resident.model, raw, "default").tolist()
        ranked = sorted(range(len(probs)), key=lambda i: probs[i], reverse=True)
        top_k = params.top_k or len(ranked)
        return [{"label": label_of(resident.model, i), "score": float(probs[i])} for i in ranked[:top_k]]


TASK = register_task(ImageClassification())
