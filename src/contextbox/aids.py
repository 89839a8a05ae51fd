"""Small-model aids: what the engine does so that a small root model ends its run well.

A 1.5B model ignores advice in prose, so the aids that matter steer through the *schema* of
its next turn (for models with constrained decoding) and say the same in the feedback (for
every model). Each aid is configurable in ``[aids]`` (README "Small-model aids") and each
firing is an ``aid`` event.

Before an action (:meth:`RunAids.before`): an answer before the model has looked is refused;
a repeated action is not run again; while the model must answer, anything but an answer is
refused. After it (:meth:`RunAids.after`): hints for searches with no or too many hits; an
answer is sent back once when it appears nowhere in what the model read (``grounding``), ends
inside a longer token of the text (``cut_answer``), counts the hits a capped list showed
instead of the total (``capped_count``), or only restates a sentence it found
(``verify_restated``: one verification turn). At the end of a turn (:meth:`RunAids.end_turn`):
a repeat bans that op for the next turn; a second repeat, ``stall_turns`` turns without a
new action, or ``hit_turns`` turns after a search whose hit 1 holds the question (the answer is on
screen) leave only ``final`` — the loop ends. The table route (which ops a turn may use for a
counting question over structured lines, the column choice, the arguments the question fixes) is
:mod:`contextbox.aids_table`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .aids_table import AGGREGATING, FINAL_ONLY, STATS_Q, TableRoute, aggregate_question, route_ops, structured
from .column_hints import FILTERED
from .context import Context
from .executors import Action, ActionOutput, Session
from .levels.commands import READ_OPS, input_vars

_WORD = re.compile(r"\w+", re.UNICODE)
#: a "token" of source text for the cut-answer check: word characters joined by - . / :
_TOKEN_CHARS = r"[\w\-./:]"
_COUNT_Q = re.compile(r"\b(how many|how often|number of|count|frequency|times)\b", re.I)
_WH_Q = re.compile(r"^\s*(?:\w+\s+){0,2}(which|what|who|whom|whose|where|when|why|how)\b", re.I)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
#: questions that want every value of a ranking, not its head
_ALL_RANKED = re.compile(r"\b(rank\w*|from most to least|from least to most|count of each|counts? for each|"
                         r"each (?:type|value|label|kind|category)|list all|all (?:the )?(?:types|values|labels|kinds))\b",
                         re.I)
_COUNT_LINE = re.compile(r"^(?!\(missing\))(.{1,80}?): ([\d,]+)$")
_NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
#: "Answer with the password only", "give the number only": the answer is a value, not a sentence
_ONLY_Q = re.compile(r"\b(?:answer|reply|respond|give|write)\b[^.?!]{0,40}\bonly\b|\bonly the \w+\b", re.I)
_N = r"(\d{1,3}|two|three|four|five|six|seven|eight|nine|ten)"
#: "the 5 most frequent words", "top 3", "answer with the 5 words": a list of that many items
_N_ITEMS = re.compile(rf"\b(?:top|first)\s+{_N}\b|\b{_N}\s+(?:most|least)\b|\banswer with the {_N}\b", re.I)


_CODE_Q = re.compile(r"\b(functions?|methods?|class(?:es)?|modules?|def|constants?|decorators?|endpoints? handler)\b",
                     re.I)
_CODE_EXT = frozenset(".py .pyi .js .jsx .ts .tsx .go .rs .java .kt .c .h .cc .cpp .hpp .cs .rb .php .swift .scala "
                      ".sh .lua .m .r .jl .ex .exs .clj .hs .ml".split())


_SPAN_TOKEN = re.compile(r"[\w][\w\-./:']*[\w]|[\w]")
_GLUE = frozenset("a an the is was are were be been of to in on at by for and or as it its this that with from".split())


def new_spans(sentence: str, question: str, most: int = 5) -> list[str]:
    """The runs of ``sentence``'s words that ``question`` does not hold, glue words trimmed off their ends:
    "The secret password to the old library is AMBER-2500." asked "What is the secret password to the old
    library?" → ["AMBER-2500"]. Empty when there are none or more than ``most``."""
    asked = {w.casefold() for w in _SPAN_TOKEN.findall(question)}
    runs: list[list[re.Match[str]]] = [[]]
    for m in _SPAN_TOKEN.finditer(sentence):
        if m.group().casefold() in asked:
            runs.append([])
        else:
            runs[-1].append(m)
    out: list[str] = []
    for run in runs:
        while run and run[0].group().casefold() in _GLUE:
            run.pop(0)
        while run and run[-1].group().casefold() in _GLUE:
            run.pop()
        span = sentence[run[0].start():run[-1].end()] if run else ""
        if span and span not in out:
            out.append(span)
    return out if len(out) <= most else []


def code_context(context: Context) -> bool:
    """Whether most of the context's documents are source files (by extension)."""
    import os.path

    docs = context.documents
    if not docs:
        return False
    code = sum(os.path.splitext(d.path)[1].lower() in _CODE_EXT for d in docs)
    return code >= 0.5 * len(docs)


_FILLER = frozenset(
    "a an the is are was were be been it its this that these those of in on at to for from by with and or "
    "not no yes as so than then there here which what who whom whose when where why how most least more less "
    "answer total number count times value ms sec secs seconds minutes hours days bytes kb mb gb percent usd "
    "response request requests time".split())


def norm(s: str) -> str:
    return " ".join(s.casefold().split()).strip(" .,;:!?\"'`()[]")


@dataclass
class Steer:
    """How the next turn is constrained (schema) and what the model is told."""

    only: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    verify: bool = False
    message: str = ""


@dataclass
class _Capped:
    what: str
    listed: int
    total: int


class RunAids(TableRoute):
    """The aids' state for one run."""

    def __init__(self, settings: Any, question: str, context: Context, session: Session, *, local: bool,
                 preview_chars: int, max_iterations: int):
        self.settings = settings
        self.question = question
        self.context = context
        self.session = session
        self.max_iterations = max_iterations
        self.grounding = settings.grounding is True or (settings.grounding == "auto" and local)
        #: a counting/ranking question over structured lines: constrained turns may only build and
        #: aggregate tables (``[aids] table_route``)
        self.table_route = bool(getattr(settings, "table_route", False)) and aggregate_question(question) \
            and structured(context)
        #: a question about code ("which function loads ...") over a code base: searches rank whole
        #: definitions (paragraphs), not single lines (``[aids] code_search``)
        self.code_question = bool(getattr(settings, "code_search", True)) and _CODE_Q.search(question) is not None \
            and code_context(context)
        #: a "who did it?" question over a case file: the engine's case route (``[aids] case_route``)
        from .case_route import CaseRoute

        self.case = CaseRoute(question) if CaseRoute.applies(settings, question, context) else None
        #: the table route's ops: (first turn, later turns), chosen by what the question asks
        self.route_ops = route_ops(question)
        self.aggregated = False  # an aggregating op (count_by, stats, ...) has produced a result
        self._fields_key: Any = None  # the tables the column choice was made for
        self._fields: list[str] | None = None
        self._filters: dict[str, Any] = {}  # rows the question names: {column: value}
        self.filter_done = False  # the engine's filter step ran (its rows are the table ``sel``)
        self.work: str | None = None  # the table route's newest table (extract, filter, map)
        self._announce = False
        self._filtered: set[str] = set()  # tables a filter stored
        self.last_counts: list[tuple[str, str]] | None = None  # (value, count) of the last count_by/top
        self.ranking_answer: str | None = None  # the exact ranking a sent-back answer must give
        self.short_answer = False  # "... the password only": a restated sentence goes back, then final is short
        self.short_spans: list[str] = []  # ... and one of these spans of the sentence, when it has any
        #: a pairs question ("every pair of users who both have at least K rows labelled X"): the route
        #: labels, filters the condition's rows, runs ``pairs``, then answers (``[aids] pairs_route``)
        from .pairs_hints import pairs_question

        self.pairs_ask = pairs_question(question) if self.table_route and getattr(settings, "pairs_route", True) \
            and getattr(settings, "column_choice", True) else None
        self.pairs_made: str | None = None  # the variable holding the engine's pairs
        self.last_pairs: list[tuple[str, str]] | None = None  # the engine's pairs, as text
        shown = context.metadata(preview_chars=preview_chars)
        self.seen: list[str] = [question, shown["head"], shown["tail"]]
        self.done_actions: dict[str, int] = {}
        self.looked = False
        self.searched = False  # a ranked search ran (``question_search`` fixes the first one's query)
        self.rejected_answer: str | None = None
        self.used: set[str] = set()  # one-shot aids that already fired
        self.fired: list[dict[str, Any]] = []  # aid events not yet emitted
        self.capped: list[_Capped] = []
        self.repeats = 0
        self.stall = 0
        #: the iteration by which the answer must come: a search's hit 1 held the question (``hit_turns``)
        self.hit_due: int | None = None
        self.steer = Steer()  # constraints in force for the coming turn
        self._turn_repeat: str | None = None
        self._turn_new = False
        self._turn_refused = False
        self._sent_back = False

    # ------------------------------------------------------------------ bookkeeping
    def _fire(self, aid: str, iteration: int, message: str, **extra: Any) -> None:
        self.fired.append({"aid": aid, "iteration": iteration, "message": message, **extra})

    def drain(self) -> list[dict[str, Any]]:
        out, self.fired = self.fired, []
        return out

    def case_active(self, levels: tuple[str, ...]) -> bool:
        """The case route needs sub-calls (its ``examine`` is L4)."""
        return self.case is not None and "l4" in levels

    def turn_route(self, variables: dict[str, Any], levels: tuple[str, ...]
                   ) -> bool | tuple[tuple[str, ...], tuple[str, ...]]:
        """The ops the coming turn is limited to (first turn, later turns), or False: no route."""
        if self.case_active(levels):
            assert self.case is not None
            return self.case.route(variables)
        return self.table_route and self.route(variables, levels)

    def turn_shapes(self, levels: tuple[str, ...]) -> dict[str, Any] | None:
        """Shapes of the ops a route adds to the coming turn's schema."""
        if not self.case_active(levels):
            return None
        from .case_route import SHAPES

        return dict(SHAPES)

    def overrides(self) -> dict[str, dict[str, Any]] | None:
        """The table route's fixed arguments (:meth:`TableRoute.overrides`), and the case route's answer."""
        out = super().overrides() or {}
        if self.case is not None:
            out.update(self.case.overrides(self.session.variables))
        return out or None

    def repeat_key(self, action: Action) -> str | None:
        """What makes an action "the same again": its text, and the state of a variable it reads.

        Code cells are never repeats (their namespace changes between turns)."""
        if action.kind == "code" or action.op not in READ_OPS:
            return None
        names = input_vars(action.args, self.session)
        if not names:
            return action.source
        state = []
        for name in names:
            value = self.session.variables.get(name)
            size = len(value) if hasattr(value, "__len__") else None
            state.append(f"{name}|{id(value)}|{type(value).__name__}|{size}")
        return f"{action.source}|{'|'.join(state)}"

    # ------------------------------------------------------------------ before an action
    def before(self, action: Action, iteration: int) -> ActionOutput | None:
        aids = self.settings
        is_final = action.kind == "command" and action.op in FINAL_ONLY
        last_turn = iteration >= self.max_iterations
        if is_final and aids.first_turn and not self.looked and not last_turn:
            answer = action.args.get("answer")
            if isinstance(answer, str) and answer.strip():
                self.rejected_answer = answer.strip()
            msg = ("error: look at the context before you answer. Search it first, e.g. "
                   '{"op": "search", "query": "words of the question"}.')
            self._fire("first_turn", iteration, msg)
            return ActionOutput(msg, error=True)
        if self.steer.only is not None and not is_final and action.kind == "command":
            msg = "refused: you must answer now. Reply with the final command, using what you found above."
            self._turn_refused = True
            self._fire("final_only", iteration, msg, op=action.op)
            return ActionOutput(msg, error=True)
        key = self.repeat_key(action)
        store = action.args.get("store")
        fresh = store and store not in self.session.variables  # storing under a new name is not a repeat
        if aids.repetition and key is not None and key in self.done_actions and not fresh:
            k = self.done_actions[key]
            self.repeats += 1
            self._turn_repeat = action.op
            msg = (f"note: you already ran this exact action at iteration {k}; its output is above and it "
                   "was not run again.")
            self._fire("repetition", iteration, msg, op=action.op, repeats=self.repeats)
            return ActionOutput(msg, error=True)
        return None

    # ------------------------------------------------------------------ after an action
    def after(self, action: Action, out: ActionOutput, iteration: int) -> None:
        if out.error:
            return
        reading = action.kind == "code" or action.op in READ_OPS or action.level == "l4"
        if reading:
            self.looked = True
            key = self.repeat_key(action)
            if key is not None and key not in self.done_actions:
                self.done_actions[key] = iteration
                self._turn_new = True
            elif key is None:
                self._turn_new = True
        elif action.op not in FINAL_ONLY:
            self._turn_new = True
        if action.op == "search":
            self.searched = True
            if self.hit_due is None and getattr(self.settings, "hit_turns", 0) and self._hit_holds(action, out):
                self.hit_due = iteration + self.settings.hit_turns
                self._fire("hit_turns", iteration, f"hit 1 holds the question: answer by iteration {self.hit_due}")
        if action.op in AGGREGATING:
            self.aggregated = True
            if action.op in ("count_by", "top", "word_counts"):  # the ranking the answer should give in full
                rows = [m.groups() for m in map(_COUNT_LINE.match, out.text.splitlines()[1:21]) if m]
                self.last_counts = rows or None
        if action.op == "filter" and action.args.get("store") == FILTERED and self._filters:
            self.filter_done = True
        if action.op == "pairs":
            self.pairs_result(action)
        made = out.meta.get("store_as") or action.args.get("store")
        if action.op == "filter" and made:
            self._filtered.add(made)
        if self.table_route and action.op in ("extract", "records", "filter", "llm_map") and made:
            from .table import Table

            if isinstance(self.session.variables.get(made), Table):
                self.work = made  # the route's working table: aggregates and maps run on it
        if out.final is None:
            self.seen.append(out.text)
            listed = out.meta.get("listed")
            if out.hits is not None and isinstance(listed, int) and listed < out.hits:
                self.capped.append(_Capped(action.describe(60), listed, out.hits))
            self._search_hints(action, out, iteration)
            if action.op == "stats":
                self._asked_stats(out, iteration)
            return
        problem = self._check_answer(out.final, iteration)
        if problem is not None:
            self.rejected_answer = out.final
            out.final = None
            out.text = problem
            self._sent_back = True

    def _search_hints(self, action: Action, out: ActionOutput, iteration: int) -> None:
        aids = self.settings
        if action.op == "search" and out.hits and not action.args.get("on") \
                and getattr(aids, "linked_passages", False):
            self._linked(action, out, iteration)
            return
        if out.hits is None or action.op not in ("find", "regex", "count"):
            return
        if out.hits == 0 and action.op == "find" and getattr(aids, "ranked_fallback", False) \
                and not action.args.get("on"):
            from .search import closest_passages

            near = closest_passages(self.context, str(action.args.get("text", "")), k=3)
            if near:
                out.text += "\n" + near
                self.seen.append(near)
                self._fire("ranked_fallback", iteration, near.split("\n", 1)[0])
                return
        if out.hits == 0 and aids.zero_hits:
            hint = "\nhint: no hits. Try a shorter pattern, a single distinctive word, or search with ranked words."
            out.text += hint
            self._fire("zero_hits", iteration, hint.strip())
        elif aids.too_many_hits and out.hits > aids.too_many_hits and action.op != "count":
            hint = (f"\nhint: {out.hits:,} hits is too many to read. Narrow down: a longer phrase, "
                    "a rarer word, or a regex that includes nearby words. To count or rank, use the table ops.")
            out.text += hint
            self._fire("too_many_hits", iteration, hint.strip(), hits=out.hits)

    def _hit_holds(self, action: Action, out: ActionOutput) -> bool:
        """Whether a whole-context search's hit 1 holds the run's question (:func:`search.hit_holds_question`)."""
        from .search import hit_holds_question

        hits = out.meta.get("ranked")
        if action.args.get("on") or not isinstance(hits, list) or not hits:
            return False
        return hit_holds_question(self.context, hits, self.question, str(action.args.get("unit") or "line"))

    def _linked(self, action: Action, out: ActionOutput, iteration: int) -> None:
        """Under a search's hits, the passages that share hit 1's rare words (a question's second hop)."""
        from .search import linked_passages, render_linked

        hits = out.meta.get("ranked")
        if not isinstance(hits, list) or not hits:
            return
        unit = str(action.args.get("unit") or "line")
        links, linked = linked_passages(self.context, hits, str(action.args.get("query", "")), unit)
        text = render_linked(links, linked, self.context)
        if not text:
            return
        out.text += "\n" + text
        self.seen.append(text)
        out.meta.setdefault("read", []).extend([h["offset"], h["end"]] for h in linked)
        self._fire("linked_passages", iteration, text.split("\n", 1)[0], hits=len(linked))

    def _asked_stats(self, out: ActionOutput, iteration: int) -> None:
        """Repeat the statistics the question names on one line, so a small model copies the right ones."""
        values = dict(re.findall(r"\b(\w+)=(-?[\d.]+)", out.text))
        names = {"average": "mean", "minimum": "min", "maximum": "max"}
        asked: list[str] = []
        for m in STATS_Q.finditer(self.question):
            key = names.get(m.group(1).lower(), m.group(1).lower())
            if key in values and key not in asked:
                asked.append(key)
        if asked:
            line = "asked: " + ", ".join(f"{k}={values[k]}" for k in asked)
            out.text += "\n" + line
            self._fire("asked_stats", iteration, line)

    def _once(self, name: str) -> bool:
        if name in self.used:
            return False
        self.used.add(name)
        return True

    def _check_answer(self, answer: str, iteration: int) -> str | None:
        """Why ``answer`` goes back to the model (each check once per run), or None to accept it."""
        aids = self.settings
        if self.case is not None:  # the case route's ranking decides; the other checks don't apply to it
            named, msg = self.case.check_answer(answer, self.session.variables)
            if named:
                return None
            if msg and self._once("case_verdict"):
                self._fire("case_verdict", iteration, msg)
                return msg
        # the engine's own aggregate first: a ranking or pair list it computed says exactly what the
        # answer is (a generic check first spent the turns: 'IP: count' went back as a restated question)
        if getattr(aids, "list_length", True):
            extra = self.too_many_items(answer)
            if extra is not None and self._once("list_length"):
                n, items = extra
                msg = (f"check: the question asks for {n} items; your answer lists {len(items)}. Send the final "
                       f"command again with only the first {n}: {', '.join(items[:n])}.")
                self._fire("list_length", iteration, msg, asked=n, listed=len(items))
                return msg
        if getattr(aids, "list_length", True):
            missing = self.incomplete_ranking(answer)
            if missing is not None and self._once("ranking_complete"):
                # the whole ranking as one line to copy (a list of what was left out got appended after
                # the model's first item, out of order)
                msg = (f"check: by the ranking above, the question's answer is {len(missing[0])} value(s), most "
                       f"frequent first. Send the final command again with exactly: {', '.join(missing[0])}")
                self.ranking_answer = ", ".join(missing[0])  # the next turn's final answer is exactly this
                self._fire("ranking_complete", iteration, msg, left_out=missing[1])
                return msg
        if self.last_pairs is not None and getattr(aids, "pairs_route", True):
            wrong = self.wrong_pairs(answer)
            if wrong is not None and self._once("pairs_complete"):
                self._fire("pairs_complete", iteration, wrong, expected=len(self.last_pairs))
                return wrong
        if self.grounding and "grounding" not in self.used:
            problem = self.ungrounded(answer)
            if problem and self._once("grounding"):
                msg = f"check: your answer {answer!r} {problem}"
                self._fire("grounding", iteration, msg)
                return msg
        if aids.cut_answer:
            whole = self.cut_token(answer)
            if whole is not None and self._once("cut_answer"):
                cut, full = whole
                msg = (f"check: your answer ends with {cut!r}, but the text you read has {full!r}. "
                       "Send the final command again with the whole value.")
                self._fire("cut_answer", iteration, msg, cut=cut, full=full)
                return msg
        if aids.capped_count:
            cap = self.capped_count(answer)
            if cap is not None and self._once("capped_count"):
                msg = (f"check: {cap.what} listed only {cap.listed:,} of its {cap.total:,} hits; the exact total "
                       f"is {cap.total:,}. If the question asks how many, answer with the total.")
                self._fire("capped_count", iteration, msg, listed=cap.listed, total=cap.total)
                return msg
        if aids.verify_restated and self.restates(answer) and self._once("verify_restated"):
            msg = (f"check: does your answer {answer!r} answer the question {self.question!r}? It repeats a sentence "
                   "you found. If it answers the question, send the final command again with just the answer; "
                   "if not, send the command that looks up what is still missing.")
            self.steer = Steer(verify=True, message="")
            # "answer with the password only": the verification turn's final cannot hold the sentence again;
            # it is one of the sentence's spans the question does not hold ("AMBER-2500") when there are any
            self.short_answer = _ONLY_Q.search(self.question) is not None
            self.short_spans = new_spans(answer, self.question) if self.short_answer else []
            self._fire("verify_restated", iteration, msg)
            return msg
        return None

    def incomplete_ranking(self, answer: str) -> tuple[list[str], list[str]] | None:
        """(the ranking the answer should give, the values it misses or misplaces) when the question asks
        for every value ranked ("rank the error types ... with the count of each") or for the top N ("the
        5 most frequent words") and the answer does not name exactly those values, in the engine's order."""
        if self.last_counts is None:
            return None
        m = _N_ITEMS.search(self.question)
        if m:
            raw = next(g for g in m.groups() if g)
            n = _NUMBER_WORDS.get(raw.lower()) or (int(raw) if raw.isdigit() else 0)
            items = self.last_counts[:n] if n >= 2 else None
        else:
            items = self.last_counts if _ALL_RANKED.search(self.question) else None
        if not items:
            return None
        low = answer.casefold()
        found = sorted((hit.start(), name) for name, _ in self.last_counts
                       for hit in [re.search(rf"(?<!\w){re.escape(name.casefold())}(?!\w)", low)] if hit)
        named = [name for _, name in found]
        want = [name for name, _ in items]
        if named == want or (not named and not self.table_route):  # (off the route: maybe another question's)
            return None
        with_counts = _ALL_RANKED.search(self.question) or re.search(r"\bcounts?\b", self.question, re.I)
        shown = [f"{nm}: {c}" for nm, c in items] if with_counts else want
        return shown, [w for w in want if w not in named[: len(want)]] or want

    def too_many_items(self, answer: str) -> tuple[int, list[str]] | None:
        """(n, items) when the question asks for ``n`` items ("the 5 most frequent", "top 3") and the
        answer is a list of clearly more (a model copying a whole ranking)."""
        m = _N_ITEMS.search(self.question)
        if not m:
            return None
        raw = next(g for g in m.groups() if g)
        n = _NUMBER_WORDS.get(raw.lower()) or (int(raw) if raw.isdigit() else 0)
        items = [x.strip() for x in re.split(r"[,;\n]+", answer) if x.strip()]
        if n < 2 or len(items) <= n + 1:
            return None
        return n, items

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
        if not a or a in seen or all(w in words for w in _WORD.findall(a) if len(w) > 1 and w not in _FILLER):
            return None
        return ("does not appear in anything you have read. Verify it against the context (e.g. find it), "
                "then send the final command again.")

    def cut_token(self, answer: str) -> tuple[str, str] | None:
        """(cut, whole) when the answer's last token only ever occurs in the text as the start of a longer one."""
        m = re.search(rf"({_TOKEN_CHARS}*\w)\W*$", answer.strip())
        if not m or len(m.group(1)) < 2:
            return None
        last = m.group(1)
        seen = "\n".join(self.seen[1:])  # not the question
        whole: list[str] = []
        for hit in re.finditer(rf"(?<!{_TOKEN_CHARS}){re.escape(last)}({_TOKEN_CHARS}*)", seen):
            rest = hit.group(1).rstrip(".:/-")
            if not rest:
                return None  # it does occur as a whole token
            whole.append(last + rest)
        if not whole:
            return None
        return last, max(set(whole), key=whole.count)

    def capped_count(self, answer: str) -> _Capped | None:
        """The capped hit list whose *listed* number the answer gives for a count question."""
        if not self.capped or not _COUNT_Q.search(self.question):
            return None
        nums = {int(n.replace(",", "")) for n in _NUMBER.findall(answer) if "." not in n}
        for c in reversed(self.capped):
            if c.listed in nums and c.total not in nums:
                return c
        return None

    def restates(self, answer: str) -> bool:
        """A wh-question answered by a sentence copied from the text (at least 5 words, most of them read)."""
        if not _WH_Q.search(self.question):
            return False
        words = _WORD.findall(answer.casefold())
        if len(words) < 5:
            return False
        a = norm(answer)
        return any(a in norm(s) for s in self.seen[1:])

    # ------------------------------------------------------------------ end of a turn
    def end_turn(self, iteration: int, constrained: bool) -> Steer:
        """Decide the next turn's constraints from this turn; returns them (also kept in ``steer``)."""
        aids = self.settings
        verify = self.steer.verify and self._sent_back
        repeated, new, refused = self._turn_repeat, self._turn_new, self._turn_refused
        self._turn_repeat, self._turn_new, self._turn_refused, sent_back = None, False, False, self._sent_back
        self._sent_back = False
        if new or sent_back:
            self.stall = 0
        elif repeated or refused:  # invalid commands alone are not a stall: they have their own limit
            self.stall += 1
        if verify:
            self.steer = Steer(verify=True)
            return self.steer
        if sent_back:  # the model needs one free turn to fix its answer
            self.steer = Steer()
            return self.steer
        if self.steer.only is not None:  # it still has not answered: the restriction holds
            return self.steer
        stalled = aids.stall_turns and self.stall >= aids.stall_turns
        due = self.hit_due is not None and iteration + 1 >= self.hit_due
        if (repeated and self.repeats >= 2) or stalled or due:
            why = ("you repeated an action" if repeated else f"{self.stall} turns brought nothing new" if stalled
                   else "a search found the passage that holds the question; it is above")
            msg = (f"You must answer now ({why}): reply with the final command, using what you found above. "
                   + ("Only final is allowed on your next turn." if constrained else ""))
            self.steer = Steer(only=FINAL_ONLY, message=msg.strip())
            self._fire("final_only", iteration, self.steer.message, stall=self.stall, repeats=self.repeats)
        elif repeated:
            msg = (f"Do something different: a different command (not {repeated} again), or the final command "
                   "if the answer is above.")
            self.steer = Steer(exclude=(repeated,), message=msg)
        else:
            self.steer = Steer()
        return self.steer
