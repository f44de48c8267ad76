"""chat: conversations through the model's own chat template, continued like a text-generation prompt.

The result is text-generation's plus the assistant ``message``. A model without a chat template, or a template
that refuses a conversation, fails the job as invalid input naming the field.
"""
from __future__ import annotations

from typing import Any

from gpuq.common.errors import InvalidInput
from gpuq.worker.inference.base import TextModel
from gpuq.worker.inference.text_generation import Item, TextGeneration


class Chat(TextGeneration):
    name = "chat"

    def prepare(self, resident: TextModel, inputs: list[Any], params: dict[str, Any]) -> list[Any]:
        return [Item(self.render(resident, c, i), False, bool(params.get("stream"))) for i, c in enumerate(inputs)]

    def shape(self, item: Item, text: str) -> dict[str, Any]:
        return {"generated_text": text, "message": {"role": "assistant", "content": text}}

    @staticmethod
    def render(resident: TextModel, conversation: list[dict[str, Any]], index: int) -> str:
        """The conversation as the model's chat template writes it, the assistant's turn open."""
        tok = resident.tokenizer
        if not getattr(tok, "chat_template", None):
            raise InvalidInput("model: it has no chat template; use task text-generation", field="model")
        from jinja2 import TemplateError

        try:
            return str(tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False))
        except TemplateError as exc:
            raise InvalidInput(f"inputs.{index}: the model's chat template refused this conversation: {exc}",
                               field=f"inputs.{index}") from None


TASK = Chat()
