"""Small-model aids: what the engine does so that a small root model ends its run well.

Each aid is configurable in ``[aids]`` (see README). They look at an action before it runs
(:meth:`RunAids.before`: refuse an answer given before looking, skip a repeated action) and
at its output after (:meth:`RunAids.after`: hints for searches with no or too many hits, an
answer that appears nowhere in what the model read is sent back once).
"""

from __future__ import annotations

import re
from typing import Any

from .commands import READ_OPS
from .context import Context
from .executors import Action, ActionOutput, Session

_WORD = re.compile(r"\w+", re.UNICODE)


def norm(s: str) -> str:
    return " ".join(s.casefold().split()).strip(" .,;:!?\"'`()[]")


class RunAids:
    """The aids' state for one run."""

    def __init__(self, settings: Any, question: str, context: Context, session: Session, *, local: bool,
                 preview_chars: int, max_iterations: int):
        self.settings = settings
        self.question = question
        self.session = session
        self.max_iterations = max_iterations
        self.grounding = settings.grounding is True or (settings.grounding == "auto" and local)
        shown = context.metadata(preview_chars=preview_chars)
        self.seen: list[str] = [question, shown["head"], shown["tail"]]
        self.done_actions: dict[str, int] = {}
        self.looked = False
        self.grounding_used = False
        self.rejected_answer: str | None = None

    def repeat_key(self, action: Action) -> str | None:
        """What makes an action "the same again": its text, and the state of a variable it reads.

        Code cells are never repeats (their namespace changes between turns)."""
        if action.kind == "code" or action.op not in READ_OPS:
            return None
        name = action.args.get("on") or (action.args.get("name") if action.op == "get" else None)
        if not name:
            return action.source
        value = self.session.variables.get(str(name).split("[", 1)[0])
        size = len(value) if hasattr(value, "__len__") else None
        return f"{action.source}|{id(value)}|{type(value).__name__}|{size}"

    def before(self, action: Action, iteration: int) -> ActionOutput | None:
        aids = self.settings
        is_final = action.kind == "command" and action.op in ("final", "final_var")
        last_turn = iteration >= self.max_iterations
        if is_final and aids.first_turn and not self.looked and not last_turn:
            answer = action.args.get("answer")
            if isinstance(answer, str) and answer.strip():
                self.rejected_answer = answer.strip()
            return ActionOutput(
                "error: look at the context before you answer. Search it first, e.g. "
                '{"op": "find", "text": "a distinctive word from the question"}.', error=True)
        key = self.repeat_key(action)
        if aids.repetition and key is not None and key in self.done_actions and not action.args.get("store"):
            k = self.done_actions[key]
            return ActionOutput(
                f"note: you already ran this exact action at iteration {k}; its output is above and it "
                "was not run again. Try something different: another search term, other lines, or "
                "answer with the final command.", error=True)
        return None

    def after(self, action: Action, out: ActionOutput, iteration: int) -> None:
        aids = self.settings
        if out.error:
            return
        reading = action.kind == "code" or action.op in READ_OPS or action.level == "l4"
        if reading:
            self.looked = True
            key = self.repeat_key(action)
            if key is not None:
                self.done_actions.setdefault(key, iteration)
        if out.final is None:
            self.seen.append(out.text)
        problem = self.ungrounded(out.final) if out.final is not None and self.grounding else None
        if problem and not self.grounding_used:
            self.grounding_used = True
            self.rejected_answer = out.final
            out.final = None
            out.text = f"check: your answer {self.rejected_answer!r} {problem}"
            return
        if out.hits is not None and action.op in ("find", "regex", "count"):
            if out.hits == 0 and aids.zero_hits:
                out.text += ("\nhint: no hits. Try a shorter pattern, a single distinctive word, "
                             "or a case-insensitive search.")
            elif aids.too_many_hits and out.hits > aids.too_many_hits:
                out.text += (f"\nhint: {out.hits:,} hits is too many to read. Narrow down: a longer phrase, "
                             "a rarer word, or a regex that includes nearby words.")

    def ungrounded(self, answer: str) -> str | None:
        """Why a short extraction answer looks unsupported (None when it looks fine)."""
        if len(answer) > 200:
            return None
        a = norm(answer)
        q = norm(self.question)
        if len(a.split()) >= 2 and a in q:
            return ("only repeats words of the question. Answer with the value the question asks for, "
                    "copied from the text you found, then send the final command again.")
        seen = norm("\n".join(self.seen))
        words = set(_WORD.findall(seen))
        if not a or a in seen or all(w in words for w in _WORD.findall(a) if len(w) > 1):
            return None
        return ("does not appear in anything you have read. Verify it against the context (e.g. find it), "
                "then send the final command again.")
