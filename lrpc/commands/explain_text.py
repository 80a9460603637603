"""``lrpc explain-text --model hf:DIR "some text" -o DIR``: token heatmaps of a language model's prediction.

The text is tokenized with the folder's own tokenizer (loaded offline). A causal LM is explained on its next
token after the text (``--target TOKEN`` picks another), a sequence classifier on its predicted class (or
``--target CLASS``). The tokens are printed colored by relevance (red +, blue −) and the output directory gets
``text.html`` (the heatmap, self-contained) and ``text.json`` (tokens, relevance, target). ``--generate N`` also
generates N tokens greedily, explains each w.r.t. everything before it and writes ``generation.png`` (the
``[new tokens × all tokens]`` matrix), its rows in ``text.html`` and the matrix in ``text.json``.
"""
from __future__ import annotations

import json
import os
import sys


from .. import text as token_text
from ..compiler import compile as compile_explainer
from ..errors import LrpcError
from ..generation import explain_generation
from ..models.text_sources import TEXT_MODELS, TextModel, load_text_model
from ..presets import PRESETS, preset
from . import prepare_output_dir

TEXT_PRESETS = ("attnlrp", "cp-lrp")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain-text", help="token heatmaps of a language model (terminal, HTML, generation matrix)",
        description="Explain a Hugging Face language model's next token (or a classifier's class) for a text: "
                    "print the tokens colored by relevance and write text.html and text.json; with --generate N "
                    "also explain every generated token (generation.png).")
    parser.add_argument("text", help="the text to explain")
    parser.add_argument("--model", required=True, metavar="hf:DIR|groundtruth-text",
                        help=f"one of {', '.join(TEXT_MODELS)}: a save_pretrained folder holding the model and its "
                             "tokenizer (loaded offline), or lrpc's shipped text ground-truth model")
    parser.add_argument("--rules", default="attnlrp", choices=list(PRESETS), metavar="PRESET",
                        help=f"rule preset (default: attnlrp; for transformers: {', '.join(TEXT_PRESETS)})")
    parser.add_argument("--target", metavar="TOKEN|id:N|CLASS",
                        help="what to explain: for a causal LM a token as text (one token, e.g. ' mat') or id:N, "
                             "for a classifier a class index or name; default: the prediction")
    parser.add_argument("--generate", type=int, default=0, metavar="N",
                        help="also generate N tokens greedily and explain each one (causal LMs)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colored terminal tokens (auto: when stdout is a terminal and NO_COLOR is unset)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (created)")
    parser.set_defaults(func=run)


def _target(spec: str | None, loaded: TextModel) -> int | None:
    if spec is None:
        return None
    if not loaded.is_causal_lm:
        labels = {str(v).lower(): int(k) for k, v in (getattr(loaded.model.config, "id2label", None) or {}).items()}
        if spec.lstrip("-").isdigit():
            return int(spec)
        if spec.lower() in labels:
            return labels[spec.lower()]
        raise LrpcError(f"--target {spec!r} is neither a class index nor a class name of this classifier "
                        f"({', '.join(labels) or 'no names'})")
    if spec.startswith("id:") and spec[3:].isdigit():
        return int(spec[3:])
    ids = loaded.tokenizer.encode(spec, add_special_tokens=False)
    if len(ids) != 1:
        pieces = token_text.readable_tokens(loaded.tokenizer, ids) if ids else []
        raise LrpcError(f"--target {spec!r} is {len(ids)} tokens {pieces} for this tokenizer, not one; give one "
                        "token (mind the leading space many tokenizers attach) or id:N")
    return ids[0]


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _label(loaded: TextModel, target: int) -> str:
    if loaded.is_causal_lm:
        return repr(token_text.readable_tokens(loaded.tokenizer, [target])[0])
    names = getattr(loaded.model.config, "id2label", None) or {}
    return f"class {target}" + (f" ({names[target]})" if target in names else "")


def run(args) -> int:
    loaded = load_text_model(args.model)
    out = prepare_output_dir(args.output)
    if args.generate < 0:
        raise LrpcError(f"--generate takes a number of tokens >= 0, got {args.generate}")
    if args.generate and not loaded.is_causal_lm:
        raise LrpcError(f"--generate needs a causal language model; {type(loaded.model).__name__} classifies")
    target = _target(args.target, loaded)
    encoded = loaded.tokenizer(args.text, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded.get("attention_mask")
    if ids.shape[1] == 0:
        raise LrpcError("the text has no tokens")
    rules = preset(args.rules)
    explainer = compile_explainer(loaded.model, rules, example_input=ids)
    exp = explainer(ids, attention_mask=mask, target=target)
    tokens = token_text.readable_tokens(loaded.tokenizer, ids[0])
    scores = exp.heatmap()[0].detach().double()
    explained = int(exp.target[0])
    color = _use_color(args.color)
    what = "next token" if loaded.is_causal_lm else "prediction"
    print(f"{what} {_label(loaded, explained)}: relevance of every token ({args.rules})")
    print(token_text.ansi_tokens(tokens, scores, color=color))
    rows = [(f"{what} {_label(loaded, explained)}", tokens, scores)]
    summary = {"model": args.model, "rules": args.rules, "text": args.text, "tokens": tokens,
               "token_ids": ids[0].tolist(), "relevance": scores.tolist(),
               "target": {"id": explained, "label": _label(loaded, explained)},
               "start": float(exp.start[0]),
               "absorbed": float(sum(v[0] for v in exp.absorbed.values())) if exp.absorbed else 0.0}
    if args.generate:
        generation = explain_generation(loaded.model, ids, args.generate, rules=rules)
        all_tokens = token_text.readable_tokens(loaded.tokenizer, generation.ids[0])
        prompt = generation.prompt_length
        print(f"generated: {''.join(all_tokens[prompt:])!r}")
        for i, row in enumerate(generation.matrix[0].double()):
            print(f"{all_tokens[prompt + i]!r:>12} ← " + token_text.ansi_tokens(all_tokens[:prompt + i],
                                                                               row[:prompt + i], color=color))
            rows.append((f"generated token {i + 1}: {all_tokens[prompt + i]!r}", all_tokens[:prompt + i],
                         row[:prompt + i]))
        token_text.save_generation_figure(out / "generation.png", generation.matrix[0], all_tokens, prompt)
        summary["generation"] = {"tokens": all_tokens, "prompt_length": prompt,
                                 "matrix": generation.matrix[0].tolist(), "start": generation.start[0].tolist()}
    token_text.save_html(out / "text.html", rows, title=f"lrpc explain-text: {args.model} ({args.rules})")
    (out / "text.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {out / 'text.html'}" + (f", {out / 'generation.png'}" if args.generate else "")
          + f" and {out / 'text.json'}")
    return 0
