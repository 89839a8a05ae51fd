"""How the local provider scores labels (providers/choice_scores.py), against a tiny deterministic "model".

The model is a table of next-token log-probabilities keyed by the last token evaluated, behind the same
llama-cpp-python surface the provider uses (tokenize, eval, n_tokens, input_ids, the context's logits):
so the scores of labels that share first tokens, and which tokens get evaluated, are exact.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np
import pytest

from contextbox.providers.choice_scores import label_logprobs, label_tokens

V = 200
WORDS = {"father": [10], "son": [11], "sonny": [11, 12], "nephew": [77, 20, 21], "niece": [77, 30], "none": [40],
         "nap": [77, 20, 50]}


def _dist(pairs: dict[int, float]) -> np.ndarray:
    """Log-probabilities over V tokens: the given probabilities, the rest spread evenly."""
    rest = (1.0 - sum(pairs.values())) / (V - len(pairs))
    p = np.full(V, rest)
    for t, v in pairs.items():
        p[t] = v
    return np.log(p)


class FakeLlama:
    chat_format = "chatml"
    metadata: dict[str, str] = {}

    def __init__(self, table: dict[int, np.ndarray]) -> None:
        self.table = table
        self.input_ids_all = np.zeros(4096, dtype=np.intc)
        self.n_tokens = 0
        self.evals: list[list[int]] = []
        self._buf = (ctypes.c_float * V)()
        self._ctx = self

    @property
    def input_ids(self) -> np.ndarray:
        return self.input_ids_all[: self.n_tokens]

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        s = text.decode()
        if s in WORDS:
            return list(WORDS[s])
        return [100 + b % 50 for b in text]

    def eval(self, tokens: list[int]) -> None:
        self.evals.append(list(tokens))
        self.input_ids_all[self.n_tokens: self.n_tokens + len(tokens)] = tokens
        self.n_tokens += len(tokens)
        logp = self.table.get(int(tokens[-1]), self.table[-1])
        for i in range(V):  # raw logits: log-probabilities plus a constant (the softmax removes it)
            self._buf[i] = float(logp[i]) + 3.0

    def get_logits(self) -> Any:
        return ctypes.cast(self._buf, ctypes.POINTER(ctypes.c_float))

    def n_vocab(self) -> int:
        return V


def _model() -> FakeLlama:
    start = _dist({10: 0.3, 77: 0.5, 40: 0.1})  # after the answer's '["': "n…" is likeliest
    after_n = _dist({20: 0.2, 30: 0.7})  # after "n": "iece" over "eph"
    after_neph = _dist({21: 0.9, 50: 0.05})  # after "n", "eph": "ew" over "ap"'s last token
    quote = 100 + ord('"') % 50
    return FakeLlama({quote: start, 77: after_n, 20: after_neph, -1: _dist({})})


MSG = [{"role": "user", "content": "What is B to A?"}]


def test_labels_with_their_own_first_token_take_one_pass() -> None:
    llama = _model()
    scores, n = label_logprobs(llama, MSG, ["father", "none", "son"])
    assert scores == pytest.approx({"father": math.log(0.3), "none": math.log(0.1),
                                    "son": math.log(0.1 / (V - 3))})
    assert len(llama.evals) == 1 and n == len(llama.evals[0])


def test_labels_sharing_a_first_token_are_told_apart_one_step_down() -> None:
    llama = _model()
    scores, _ = label_logprobs(llama, MSG, ["father", "nephew", "niece", "none"])
    assert scores == pytest.approx({"father": math.log(0.3), "nephew": math.log(0.5 * 0.2),
                                    "niece": math.log(0.5 * 0.7), "none": math.log(0.1)})
    assert llama.evals[1:] == [[77]]  # "n" evaluated once, after the prompt
    assert list(scores) == ["father", "nephew", "niece", "none"]  # in the labels' order
    # three levels: "nephew" and "nap" share "n", "eph"
    llama = _model()
    scores, _ = label_logprobs(llama, MSG, ["nephew", "nap", "niece"])
    assert scores == pytest.approx({"nephew": math.log(0.5 * 0.2 * 0.9), "nap": math.log(0.5 * 0.2 * 0.05),
                                    "niece": math.log(0.5 * 0.7)})
    assert llama.evals[1:] == [[77], [20]]
    prompt_len = len(llama.evals[0])
    assert llama.n_tokens == prompt_len + 2  # the shared path "n", "eph" sits after the prompt


def test_the_next_record_reuses_the_evaluated_prompt_prefix() -> None:
    llama = _model()
    label_logprobs(llama, [{"role": "user", "content": "What is B to A? record one"}], ["nephew", "niece"])
    first = len(llama.evals[0])
    label_logprobs(llama, [{"role": "user", "content": "What is B to A? record two"}], ["nephew", "niece"])
    assert len(llama.evals[2]) < first  # only the differing tail (and the answer's start) is evaluated again
    assert llama.evals[3] == [77]


def test_labels_one_of_which_begins_another_cannot_be_scored() -> None:
    llama = _model()
    assert label_tokens(llama, ["son", "sonny"]) is None
    assert label_tokens(llama, ["son", "son"]) is None
    assert label_tokens(llama, ["nephew", "niece", "none"]) == [[77, 20, 21], [77, 30], [40]]
    with pytest.raises(ValueError, match="cannot be scored"):
        label_logprobs(llama, MSG, ["son", "sonny"])
