"""chat: a conversation (a list of ``{role, content}`` messages, or a list of conversations) through the model's
own chat template, continued by the causal LM like a text-generation prompt.

The template renders with ``add_generation_prompt`` (the assistant's turn opens) and the prompt is encoded
without adding special tokens again (the template writes them). The result is text-generation's plus the
assistant ``message``. A model without a chat template, or a template that refuses the conversation (an
unknown role, roles out of order), fails the job as invalid input naming the field.
"""
from __future__ import annotations

from typing import Any

from gpuq.common.errors import InvalidInput
from gpuq.common.jobs.inference import ChatParams
from gpuq.worker.inference.base import TextModel, bad_input, register_task
from gpuq.worker.inference.text_generation import Item, TextGeneration, refuse_static_only


class Chat(TextGeneration):
    name = "chat"

    def split(self, inputs: Any) -> tuple[list[Any], bool]:
        """One conversation (a list of messages) or a list of them."""
        if inputs and all(isinstance(c, list) for c in inputs):
            return list(inputs), False
        return [inputs], True

    def prepare(self, resident: TextModel, inputs: list[Any], params: ChatParams) -> list[Any]:
        refuse_static_only(params)
        return [Item(self.render(resident, c, i), False, params.stream) for i, c in enumerate(inputs)]

    def prompt_ids(self, resident: TextModel, item: Any, params: ChatParams, index: int) -> list[int]:
        ids = list(resident.tokenizer(self.render(resident, item, index), add_special_tokens=False)["input_ids"])
        if not ids:
            raise bad_input(index, "the conversation renders to no tokens")
        return ids

    def shape(self, item: Any, text: str, params: ChatParams) -> dict[str, Any]:
        return {"generated_text": text, "message": {"role": "assistant", "content": text}}

    @staticmethod
    def render(resident: TextModel, conversation: list[dict[str, Any]], index: int) -> str:
        """The conversation as the model's chat template writes it, the assistant's turn open."""
        tok = resident.tokenizer
        if not getattr(tok, "chat_template", None):
            raise InvalidInput("model: it has no chat template (tokenizer_config.json chat_template or "
                               "chat_template.jinja); use task text-generation", field="model")
        from jinja2 import TemplateError

        try:
            return str(tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False))
        except TemplateError as exc:
            raise bad_input(index, f"the model's chat template refused this conversation: {exc}") from None


TASK = register_task(Chat())
