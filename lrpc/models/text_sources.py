"""Language models with their tokenizers, for ``lrpc explain-text --model``.

- ``hf:DIR`` — a Hugging Face ``save_pretrained`` folder holding a model and its tokenizer, both loaded offline.
  The class is the one the folder's ``config.json`` names (``architectures``: ``LlamaForCausalLM``,
  ``GPT2LMHeadModel``, ``BertForSequenceClassification``, ...), else ``AutoModelForCausalLM``.
- ``groundtruth-text`` — lrpc's shipped model of the procedural text task (``lrpc.data.text_task``), whose
  "tokenizer" splits the text on whitespace into the task's words.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import LrpcError
from .sources import pretrained_folder

__all__ = ["TEXT_MODELS", "TextModel", "WordTokenizer", "load_text_model"]

# shipped models by name, as "module:factory" (like lrpc.models.loading.NAMED_MODELS): the packages that ship them
# build them from this module, which therefore names them instead of importing them
NAMED_TEXT_MODELS = {"groundtruth-text": "lrpc.data.text_task:groundtruth_text_model"}
TEXT_MODELS = ("hf:DIR", *NAMED_TEXT_MODELS)


class WordTokenizer:
    """A whitespace tokenizer over a fixed word list: token id = index in ``words``."""

    def __init__(self, words: Sequence[str]):
        self.words = tuple(words)

    def __call__(self, text: str, return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        unknown = [w for w in text.split() if w not in self.words]
        if unknown:
            raise LrpcError(f"words {unknown} are not in this model's vocabulary: {' '.join(self.words)}")
        ids = torch.tensor([[self.words.index(w) for w in text.split()]])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def decode(self, ids, **_) -> str:
        return " ".join(self.words[int(i)] for i in ids)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self(text)["input_ids"][0].tolist()

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True)
class TextModel:
    model: nn.Module
    tokenizer: object
    spec: str

    @property
    def is_causal_lm(self) -> bool:
        """Whether the model predicts the next token (Hugging Face: it can generate) rather than classes."""
        can_generate = getattr(self.model, "can_generate", None)
        return bool(callable(can_generate) and can_generate())


def _hugging_face(folder: str) -> TextModel:
    try:
        import transformers
    except Exception as exc:
        raise LrpcError(f"hf: text models need transformers ({type(exc).__name__}: {exc}): pip install transformers") \
            from exc
    path = pretrained_folder(folder)
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        names = getattr(config, "architectures", None) or ["AutoModelForCausalLM"]
        model_class = getattr(transformers, names[0], None)
        if model_class is None:
            raise LrpcError(f"this transformers ({transformers.__version__}) has no class {names[0]}")
        model = model_class.from_pretrained(str(path), local_files_only=True)
    except LrpcError:
        raise
    except Exception as exc:
        raise LrpcError(f"hf:{folder}: transformers could not load a text model from it: {type(exc).__name__}: "
                        f"{exc}") from exc
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise LrpcError(f"hf:{folder} holds no tokenizer transformers can load ({type(exc).__name__}: {exc}); save "
                        "one into the folder with tokenizer.save_pretrained(DIR)") from exc
    return TextModel(model.eval(), tokenizer, f"hf:{folder}")


def load_text_model(spec: str) -> TextModel:
    """The model (eval mode) and tokenizer ``spec`` names: ``hf:DIR`` or ``groundtruth-text``."""
    if spec in NAMED_TEXT_MODELS:
        module, _, factory = NAMED_TEXT_MODELS[spec].partition(":")
        return getattr(importlib.import_module(module), factory)()
    source, _, name = spec.partition(":")
    if source != "hf" or not name:
        raise LrpcError(f"text model {spec!r}: give hf:DIR (a Hugging Face save_pretrained folder with its "
                        "tokenizer) or groundtruth-text")
    return _hugging_face(name)
