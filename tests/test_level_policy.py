"""The level policy, for every pair of levels in both directions: an action of a level the run
does not allow is refused and never runs; one it allows runs; the system prompt describes
exactly the allowed levels.

Each level has one way a model asks for it (:data:`ASK`). ```repl runs at the run's code level
(L2 when allowed, else L3), so with L3 alone a ```repl cell runs natively: that pair is checked
as what it is, an L3 action.
"""

from __future__ import annotations

import itertools

import pytest
from helpers import cmd, fed_back, run

from contextbox import Config, prompts
from contextbox.levels import native, sandbox

LEVELS = ("l1", "l2", "l3", "l4")
TEXT = "The secret code is ZEBRA-42.\n"

#: one reply per level that asks for an action of that level
ASK = {
    "l1": cmd("find", text="secret"),
    "l2": "```repl\nprint('RAN-' + str(6 * 7))\n```",
    "l3": "```native\nimport sys\nprint('RAN-' + str(6 * 7), sys.version_info[0])\n```",
    "l4": cmd("llm_query", prompt="say hi"),
}
#: text only that level's part of the system prompt has
SECTION = {
    "l2": sandbox.PROMPT.split(":")[0],  # "Python sandbox (L2)"
    "l3": native.PROMPT.split(":")[0],  # "Native Python (L3)"
    "l4": prompts.L4.split("\n")[0],
}


def _effective(asked: str, allowed: tuple[str, ...]) -> str:
    """The level the engine gives an action asked for at ``asked`` (```repl goes to L3 when only L3 is allowed)."""
    if asked == "l2" and "l2" not in allowed and "l3" in allowed:
        return "l3"
    return asked


@pytest.mark.parametrize("allowed,asked", [(a, b) for a, b in itertools.product(LEVELS, LEVELS) if a != b],
                         ids=lambda v: v if isinstance(v, str) else ",".join(v))
def test_a_level_not_allowed_is_refused_and_never_runs(allowed: str, asked: str) -> None:
    levels = (allowed,)
    level = _effective(asked, levels)
    res, rlm = run([ASK[asked]], TEXT, levels=allowed, max_iterations=1)
    started = [e.data["level"] for e in res.events if e.type == "action_start"]
    if level in levels:  # the L3-only ```repl case: it runs natively, as an L3 action
        assert started == ["l3"]
        return
    refused = [e for e in res.events if e.type == "refused"]
    assert [e.data["level"] for e in refused] == [level]
    assert started == []  # no executor of any level ran
    msg = refused[0].data["message"]
    assert "not allowed in this run" in msg and f"(allowed: {allowed})" in msg
    assert not any("RAN-42" in str(e.data.get("output", "")) for e in res.events)


@pytest.mark.parametrize("allowed", [("l1", lv) for lv in LEVELS[1:]] + [(lv,) for lv in LEVELS],
                         ids=lambda v: ",".join(v))
def test_an_allowed_level_runs(allowed: tuple[str, ...]) -> None:
    asked = allowed[-1]
    # with L4 the sub-model is the scripted root too: its next reply answers the sub-call
    res, rlm = run([ASK[asked], "SUB-ANSWER"], TEXT, levels=",".join(allowed), max_iterations=1)
    assert not [e for e in res.events if e.type == "refused"]
    assert [e.data["level"] for e in res.events if e.type == "action_start"] == [asked]
    out = next(e for e in res.events if e.type == "action_end").data
    assert not out["error"]
    if asked == "l2":
        assert out["output"].strip() == "RAN-42"
    elif asked == "l3":  # full CPython: sys is there
        assert out["output"].strip() == "RAN-42 3"
    elif asked == "l4":
        assert "SUB-ANSWER" in out["output"]
    else:
        assert "ZEBRA-42" in out["output"]


@pytest.mark.parametrize("allowed", [c for n in range(1, 5) for c in itertools.combinations(LEVELS, n)],
                         ids=lambda v: ",".join(v))
def test_the_system_prompt_describes_exactly_the_allowed_levels(allowed: tuple[str, ...]) -> None:
    text = prompts.system_prompt(allowed, Config().code)
    for level, marker in SECTION.items():
        assert (marker in text) == (level in allowed), f"{level} section with levels {allowed}"
    # the prompt the model is actually sent is that one
    res, _ = run([cmd("final", answer="x")], TEXT, levels=",".join(allowed), max_iterations=1)
    sent = next(e for e in res.events if e.type == "lm_request").data["system"]
    assert sent == text


def test_native_fence_with_l1_l2_never_reaches_cpython() -> None:
    """An ``l1,l2`` run: ```native is refused even though code is allowed at L2."""
    res, rlm = run([ASK["l3"], ASK["l2"], cmd("final", answer="x")], TEXT, levels="l1,l2", max_iterations=3)
    refused = [e.data["level"] for e in res.events if e.type == "refused"]
    assert refused == ["l3"]
    assert "not allowed" in fed_back(rlm)[0] and "RAN-42 3" not in fed_back(rlm)[0]
    assert [e.data["level"] for e in res.events if e.type == "action_start"] == ["l2", "l1"]  # the cell, final
    assert "RAN-42" in fed_back(rlm)[1]
