"""A typed map whose labels the sub-model scores (``[delegation] choice_scoring``): the protocol between
``run_map`` and a provider that can score labels — three content-free calls first, their mean the prior,
then one scored call per record — at the provider seam, plus the arithmetic of calibration. The real
model's scoring is tested in tests/test_local_model.py (``local_model``)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from helpers import cmd

from contextbox import RLM, Config, Context
from contextbox.engine import _Run
from contextbox.errors import ConfigError
from contextbox.executors import Action
from contextbox.levels.delegation import DelegationExecutor
from contextbox.providers import ScriptedProvider
from contextbox.providers.choice_scores import CONTENT_FREE, mean_prior, pick
from contextbox.types import Completion

LABELS = ["cat", "dog"]


class ScoringSub:
    """A sub-model that scores labels: "dog" is likelier for every record (a lean: 0.9 for no content),
    "cat" likelier than that lean for records that mention a cat; it keeps every call's options."""

    name = "scoring/sub"
    context_window = None
    supports_choice_scores = True

    def __init__(self, scorable: bool = True) -> None:
        self.scorable, self.calls = scorable, []

    def can_score(self, choices: list[str]) -> bool:
        return self.scorable

    def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
        prompt = messages[-1]["content"]
        self.calls.append((prompt, opts))
        spec = opts.get("choice_scores")
        if spec is None:  # decoded: a batch answer of the right length
            n = int(prompt.rsplit("exactly ", 1)[1].split(" ", 1)[0])
            return Completion(json.dumps(["dog"] * n), 10, 5, model=self.name)
        out = []
        for one in spec["prompts"]:  # each record on its own
            assert one.count("\n[") == 1 and "Records (1):" in one
            record = one.split("[1] ", 1)[1].split("\n", 1)[0]
            cat = 0.1 if record in CONTENT_FREE else 0.3 if "cat" in record else 0.2 if "kit" in record else 0.05
            scores = {"cat": math.log(cat), "dog": math.log(1 - cat)}
            out.append(scores if spec.get("raw") else pick(scores, spec.get("prior")))
        return Completion(json.dumps(out), 10, len(out), model=self.name)


def run_map(sub: Any, records: list[str], choice_scoring: bool = True, calibration: float | None = None,
            **args: Any) -> tuple[_Run, Any]:
    config = Config()
    config.delegation.max_concurrency = 1
    config.delegation.choice_scoring = choice_scoring
    if calibration is not None:
        config.delegation.calibration = calibration
    rlm = RLM(model=ScriptedProvider([]), sub_model=sub, levels="l1,l4", config=config)
    run = _Run(rlm, "q?", Context.from_value("-"), "t", None)
    run.session.variables["r"] = records
    out = DelegationExecutor(run.session).run(Action("command", "l4", "llm_map", {
        "op": "llm_map", "on": "r", "prompt": "Which animal is it about?", "choices": LABELS, "store": "m", **args}))
    return run, out


def test_a_scored_map_calibrates_first_then_scores_each_record() -> None:
    sub = ScoringSub()
    records = ["a cat sleeps", "a dog barks", "the cat again", "birds", "cat five"]
    run, out = run_map(sub, records, per_call=2)
    assert run.session.variables["m"].column("label") == ["cat", "dog", "cat", "dog", "cat"]  # raw: all "dog"
    (blank_prompt, blank_opts), *scored = sub.calls
    spec = blank_opts["choice_scores"]
    assert spec["raw"] and [p.split("[1] ", 1)[1].split("\n", 1)[0] for p in spec["prompts"]] == list(CONTENT_FREE)
    assert len(scored) == 3  # per_call 2: as many sub-calls as a decoded map, each record scored alone
    assert [len(o["choice_scores"]["prompts"]) for _, o in scored] == [2, 2, 1]
    # the default strength 0.5: the square root of the content-free lean is divided out
    assert scored[0][1]["choice_scores"]["prior"] == pytest.approx({"cat": 0.5 * math.log(0.1),
                                                                     "dog": 0.5 * math.log(0.9)})
    assert "[2] a dog barks" in scored[0][0]  # the call's own prompt (recorded) holds its records as usual
    assert "2 per call, labels by calibrated probability" in out.text and "5 labelled" in out.text
    sub_calls = [e.data for e in run._drain() if e.type == "sub_call"]
    assert sum("records" in e for e in sub_calls) == 3 and sum("calibration" in e for e in sub_calls) == 1


@pytest.mark.parametrize(("strength", "labels"), [(0.0, ["dog", "dog"]), (0.5, ["cat", "dog"]),
                                                  (1.0, ["cat", "cat"])])
def test_calibration_strength_sets_how_much_of_the_lean_is_divided_out(strength: float, labels: list[str]) -> None:
    # P(cat): "a cat" 0.3, "a kitten" 0.2, content-free 0.1 — raw, both "dog"; the whole prior, both "cat"
    run, _ = run_map(ScoringSub(), ["a cat", "a kitten"], calibration=strength, per_call=2)
    assert run.session.variables["m"].column("label") == labels


def test_calibration_strength_is_checked(tmp_path: Any) -> None:
    assert Config().delegation.calibration == 0.5
    p = tmp_path / "c.toml"
    p.write_text("[delegation]\ncalibration = 1\n")
    assert Config.load(p).delegation.calibration == 1.0
    for bad in ("1.5", "-0.1"):
        p.write_text(f"[delegation]\ncalibration = {bad}\n")
        with pytest.raises(ConfigError, match=r"\[delegation\] calibration must be"):
            Config.load(p)


def test_without_scoring_the_map_decodes_in_batches() -> None:
    for sub, on in ((ScoringSub(), False), (ScoringSub(scorable=False), True)):
        run, out = run_map(sub, ["a cat", "a dog", "cat"], choice_scoring=on, per_call=2)
        assert len(sub.calls) == 2 and not any("choice_scores" in o for _, o in sub.calls)
        assert run.session.variables["m"].column("label") == ["dog", "dog", "dog"]
        assert "2 per call" in out.text


def test_a_scored_map_runs_inside_a_whole_run() -> None:
    sub = ScoringSub()
    rlm = RLM(model=ScriptedProvider([cmd("set", name="r", value=["cat!", "dog"]),
                                      cmd("llm_map", on="r", prompt="Animal?", choices=LABELS, store="m"),
                                      cmd("final_var", name="m")]),
              sub_model=sub, levels="l1,l4", config=Config())
    res = rlm.run("Label the animals", "-")
    assert res.status == "answered" and "cat" in res.answer and len(sub.calls) == 1 + 1


def test_calibration_divides_out_the_lean() -> None:
    prior = mean_prior([{"a": math.log(0.8), "b": math.log(0.2)}, {"a": math.log(0.6), "b": math.log(0.4)}])
    assert prior == pytest.approx({"a": math.log(0.7), "b": math.log(0.3)})
    half = mean_prior([{"a": math.log(0.8), "b": math.log(0.2)}, {"a": math.log(0.6), "b": math.log(0.4)}], 0.5)
    assert half == pytest.approx({"a": 0.5 * math.log(0.7), "b": 0.5 * math.log(0.3)})
    assert pick({"a": math.log(0.6), "b": math.log(0.4)}, None) == "a"
    assert pick({"a": math.log(0.6), "b": math.log(0.4)}, prior) == "b"  # 0.6/0.7 < 0.4/0.3
    assert pick({"a": 0.0, "b": 0.0}, None) == "a"  # a tie: the earlier label


def test_a_calibration_answer_that_is_not_scores_leaves_the_labels_uncalibrated() -> None:
    class Garbled(ScoringSub):
        def complete(self, messages: list[dict[str, Any]], **opts: Any) -> Completion:
            if opts.get("choice_scores", {}).get("raw"):
                self.calls.append((messages[-1]["content"], opts))
                return Completion("not json", 1, 1, model=self.name)
            return super().complete(messages, **opts)

    sub = Garbled()
    run, out = run_map(sub, ["a cat", "a dog"], per_call=2)
    assert sub.calls[1][1]["choice_scores"]["prior"] is None
    assert run.session.variables["m"].column("label") == ["dog", "dog"]  # the raw argmax: "dog" leans everywhere
    assert "2 labelled" in out.text
