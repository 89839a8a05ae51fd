"""Choosing a label by the model's own probabilities: the local provider's ``choice_scores``.

A typed ``llm_map`` with ``choices`` asks for ``["label"]``. Generating that answer token by
token under a grammar makes a small model pick whatever its first token leans to, and a
small model leans hard: the embedded 1.5B model, asked for one of six TREC labels, answered
``description`` for 59 of 120 questions (29 true) and ``human`` for none (15 true). Reading
the probability of each label's first token at the answer position instead, and dividing out
the probability the model gives each label for a content-free record ("N/A", "", "?") —
*contextual calibration* (Zhao et al., "Calibrate Before Use", ICML 2021) — removes most of
that lean: 72.5 % right with label counts close to the truth (description 23, human 16), and
one forward pass per record instead of a decoded answer (``bench/bench_typed_map.py``). A sub-call of a
scored map carries its records' single-record prompts in ``choice_scores["prompts"]``: the provider
scores each on its own and answers the array of labels, so a map makes as many sub-calls as decoded.

:func:`label_logprobs` is the mechanism (one evaluation of the prompt plus ``["``, reusing the
evaluated prefix like llama-cpp-python's own calls do); :func:`pick` the choice. It applies
when no label's tokens begin another's; labels sharing first tokens ("nephew", "niece") take one
more single-token step to tell apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: what the answer starts with before the label: a JSON array of one string
ANSWER_PREFIX = '["'
#: records with no content: the model's lean toward each label, to divide out
CONTENT_FREE = ("N/A", "", "?")


def label_tokens(llama: Any, choices: Sequence[str]) -> list[list[int]] | None:
    """Each label's tokens as it follows ``["``; None when one label's tokens begin another's (or equal them),
    or a label has none: no probability of a first differing token tells those apart."""
    ids = [list(llama.tokenize(c.encode("utf-8"), add_bos=False, special=False)) for c in choices]
    if any(not t for t in ids):
        return None
    for i, a in enumerate(ids):
        for j, b in enumerate(ids):
            if i != j and len(a) <= len(b) and b[: len(a)] == a:
                return None
    return ids


def prompt_text(llama: Any, messages: list[dict[str, Any]]) -> str | None:
    """The chat as the model's own template (from its GGUF) writes it, the assistant's turn open — with
    the template's default system message, which the generic ``chatml`` format leaves empty; else the
    model's chat format; None if neither is known."""
    from llama_cpp import llama_chat_format

    template = (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template")
    if template:
        vocab = llama._model
        eos = llama.detokenize([vocab.token_eos()], special=True).decode("utf-8", "replace")
        bos = llama.detokenize([vocab.token_bos()], special=True).decode("utf-8", "replace")
        fmt = llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return fmt(messages=messages).prompt
    named = getattr(llama_chat_format, f"format_{llama.chat_format}", None) if llama.chat_format else None
    return None if named is None else named(messages=messages).prompt


def _logits(llama: Any) -> Any:
    import numpy as np

    logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(llama.n_vocab(),)).astype(np.float64)
    top = float(logits.max())
    return logits - (top + math.log(float(np.exp(logits - top).sum())))  # log-softmax


def label_logprobs(llama: Any, messages: list[dict[str, Any]], choices: Sequence[str]) -> tuple[dict[str, float], int]:
    """``({label: log-probability}, prompt tokens)`` at the answer's start.

    A label's log-probability is that of its tokens up to the first one no other label shares: one
    forward pass when every label starts with its own token ("father", "son", …); labels sharing a first
    token ("nephew" and "niece" both start with "n") cost one more single-token step each level down.
    The tokens after that are taken as given (the label is decided by then)."""
    ids = label_tokens(llama, choices)
    text = prompt_text(llama, messages)
    if ids is None or text is None:
        raise ValueError("these labels cannot be scored by their tokens (one begins another)")
    tokens = llama.tokenize((text + ANSWER_PREFIX).encode("utf-8"), special=True)
    done = llama.input_ids  # what the model has evaluated: keep the common prefix (the map's instruction)
    common = 0
    for a, b in zip(done, tokens, strict=False):
        if a != b:
            break
        common += 1
    common = min(common, len(tokens) - 1)  # at least one token to evaluate: its logits are the answer's
    llama.n_tokens = common
    llama.eval(tokens[common:])
    out: dict[str, float] = {}
    base = len(tokens)

    def walk(depth: int, members: list[int], logp: Any, acc: float) -> None:
        groups: dict[int, list[int]] = {}
        for m in members:
            groups.setdefault(ids[m][depth], []).append(m)
        for tok, group in groups.items():
            lp = acc + float(logp[tok])
            if len(group) == 1:
                out[choices[group[0]]] = lp
                continue
            llama.n_tokens = base + depth  # the shared path so far, then this token
            llama.eval([tok])
            walk(depth + 1, group, _logits(llama), lp)

    walk(0, list(range(len(choices))), _logits(llama), 0.0)
    return {c: out[c] for c in choices}, len(tokens)


def pick(scores: dict[str, float], prior: dict[str, float] | None) -> str:
    """The label with the highest (calibrated) score; ties go to the earlier label."""
    labels = list(scores)
    return max(labels, key=lambda c: (scores[c] - (prior or {}).get(c, 0.0), -labels.index(c)))


def mean_prior(scores: list[dict[str, float]], strength: float = 1.0) -> dict[str, float]:
    """The content-free records' label log-probabilities, averaged as probabilities, times ``strength``
    (the prior raised to that power: 1 divides the whole lean out, 0.5 its square root, 0 none of it)."""
    return {c: strength * math.log(sum(math.exp(s[c]) for s in scores) / len(scores)) for c in scores[0]}
