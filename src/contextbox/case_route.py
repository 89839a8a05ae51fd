"""The case route: a "who did it?" question over a case file, carried by the engine.

A 1.5B root model cannot plan an investigation, and a case file longer than its window cannot be
read whole. So the engine does what a reader of a detective story does, in three ops a
constrained model only has to name, one per turn (``[aids] case_route``):

1. ``suspects`` (L1) — the people of the file (:func:`case_file.people`), the victim(s) the question
   names left out, most mentioned first; the crime and its physical evidence
   (:func:`case_file.evidence_block`), stored as ``case_evidence``; for each suspect a dossier: the
   passages about them that bear on the crime and the other accounts of the places they say they
   were in (:func:`case_file.dossier`). A table ``suspects``: name, mentions, passages, text.
2. ``examine`` (L4) — a typed map (:func:`typed_map.run_map`), one sub-call per suspect: the crime
   and the evidence first (the shared prefix, evaluated once by a local model), the suspect's
   dossier last; the answer is :data:`FACTS_SCHEMA` — where they were, alibi confirmed / broken, at
   the scene, motive, matches the physical evidence, the key fact. A table ``facts``.
3. ``weigh`` (L1) — the engine's ranking: :data:`WEIGHTS` summed per suspect (means, motive and
   opportunity; an alibi that breaks counts for, one a witness confirms against; the suspects the
   engine's trace of the physical evidence puts on top count as matching it). A table
   ``ranking`` and a one-line ``verdict`` (the leader, the reasons, the key fact).

Then only ``final`` / ``final_var`` are offered, and an answer that does not name the ranking's
leader is sent back once with the ranking (the model may still insist). API models can call the
same ops; ``suspects`` also takes ``names`` (the suspects, when the question lists them) and ``max``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from . import case_file as cf
from .errors import CommandError
from .executors import ActionOutput
from .levels.commands import INT, Spec, register_op
from .table import Table

if TYPE_CHECKING:
    from .context import Context
    from .levels.commands import CommandExecutor

#: "who killed ...?", "who is the culprit?", "name the murderer"
CASE_Q = re.compile(
    r"\b(who\s+(?:\w+\s+){0,2}(?:killed|murdered|poisoned|stabbed|shot|strangled|stole|robbed|did (?:it|this)|"
    r"committed|is responsible|was responsible)|culprit|murderer|killer|whodunn?it|the thief|guilty party)\b", re.I)
#: a question that wants the reasons too ("name the murderer, then the motive and the key evidence")
REASONS_Q = re.compile(r"\b(motive|evidence|why|explain\w*|reason\w*|how do you know|justify)\b", re.I)
NAME_ONLY = re.compile(r"\b(name only|full name only|only (?:the|their|his|her) (?:full )?name|just (?:the|a) name)\b",
                       re.I)
#: most suspects examined (one sub-call each)
MAX_SUSPECTS = 8
#: characters of one suspect's dossier, of the shared crime-and-evidence block
DOSSIER_CHARS = 4000
EVIDENCE_CHARS = 4000
#: the facts the sub-model states per suspect (booleans after a sentence that makes it look first)
FACTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "where_they_were": {"type": "string", "maxLength": 160},
        "alibi_confirmed": {"type": "boolean"},
        "alibi_broken": {"type": "boolean"},
        "at_scene": {"type": "boolean"},
        "motive": {"type": "boolean"},
        "matches_evidence": {"type": "boolean"},
        "evidence": {"type": "string", "maxLength": 160},
    },
    "required": ["where_they_were", "alibi_confirmed", "alibi_broken", "at_scene", "motive", "matches_evidence",
                 "evidence"],
    "additionalProperties": False,
}
#: how each fact counts in the ranking, and how the ranking says it
WEIGHTS: dict[str, tuple[int, str]] = {
    "alibi_broken": (2, "alibi broken"),
    "matches_evidence": (2, "matches the physical evidence"),
    "at_scene": (1, "at the scene"),
    "motive": (1, "motive"),
    "alibi_confirmed": (-2, "alibi confirmed"),
}
TASK = """You are a detective. First the crime and the physical evidence of a case file, then one record: \
the passages of the file about one suspect (labelled "about them", or "what someone else says of the PLACE, where \
they say they were": another account of that place at the time, which may confirm or contradict theirs).
For the suspect, state these facts; a true/false fact is true only when the passages or the evidence show it:
- where_they_were: where the suspect says they were at the time of the crime, and who confirms or contradicts it
- alibi_confirmed: another person says they were with the suspect the whole time
- alibi_broken: a witness or a fact contradicts the suspect's account (e.g. someone in the place they name was \
alone there, or they were seen elsewhere), or they were seen near the scene
- at_scene: the suspect was at or near the scene of the crime around its time
- motive: the suspect had a reason to harm the victim (money, inheritance, debt, blackmail, a secret, a quarrel)
- matches_evidence: a physical trace of the crime fits the suspect (a size, a colour, a brand, a limp, a poison \
they could get)
- evidence: the strongest fact against the suspect, in one sentence ("none" if there is none)

The question: {question}

The crime and the physical evidence:
{evidence}"""

#: what the first message says of the route (an API model may follow it; a constrained one is steered)
HINT = ('This question asks who did it. The engine can carry the investigation: {"op": "suspects"} (the people, '
        'the crime and its evidence, each one\'s passages), then {"op": "examine"} (one sub-call per suspect states '
        'the facts), then {"op": "weigh"} (the ranking), then answer from the ranking.')

SPECS = {
    "suspects": Spec({}, {"names": (list,), "max": INT},
                     '{"op": "suspects"} or {"op": "suspects", "names": ["Ann Lee", "Bob Ray"]}'),
    "weigh": Spec({}, {}, '{"op": "weigh"}'),
}
#: the constrained shapes of the route's ops (the engine fixes everything: the model only names them)
SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {"suspects": ({}, {}), "examine": ({}, {}),
                                                             "weigh": ({}, {})}
EXAMINE_SPEC = Spec({}, {}, '{"op": "examine"}')


def case_question(question: str) -> bool:
    """Whether a question asks who did a deed (the culprit of a case)."""
    return CASE_Q.search(question) is not None


# ---------------------------------------------------------------------- suspects
def build(text: str, question: str, names: list[str] | None = None, limit: int = MAX_SUSPECTS
          ) -> tuple[list[dict[str, Any]], str, list[str]]:
    """(one row per suspect: name, mentions, passages, text), the crime-and-evidence block, the victims."""
    ps = cf.passages(text)
    everyone = cf.people(text)
    victims = cf.named_in(question, everyone)
    if names:  # the suspects the question (or the model) gives: matched to the people of the file
        wanted = [n.strip() for n in names if isinstance(n, str) and n.strip()]
        found = []
        for n in wanted:
            hit = next((p for p in everyone if p.pattern().search(n) or n.casefold() == p.name.casefold()), None)
            found.append(hit or cf.Person(n, n, {n}))
        candidates = found
        victims = [v for v in victims if v not in candidates]
    else:
        candidates = [p for p in everyone if p not in victims]
    crime = cf.crime_passage(ps, victims)
    if crime is None:
        raise CommandError("suspects: no passage of the context states a crime (a death, a theft) — is this a "
                           "case file? Search it instead.")
    crime_hours = cf.hours(crime.full)
    exclude = {w.casefold() for p in everyone for f in p.forms for w in f.split()}
    shared = cf.evidence_block(ps, crime, cf.crime_terms(crime, [], ps, exclude), crime_hours, EVIDENCE_CHARS)
    terms = cf.crime_terms(crime, shared, ps, exclude)
    rows = []
    for p in candidates:
        pat = p.pattern()
        own = sum(1 for x in ps if x.header and pat.search(x.header))  # passages under their own header
        d, n = cf.dossier(p, ps, terms, crime_hours, shared, DOSSIER_CHARS, everyone)
        score, words = cf.trace(p, ps, crime, shared, terms)
        rows.append({"name": p.name, "mentions": p.mentions + own, "passages": n, "trace": score,
                     "trace_terms": ", ".join(words[:6]),
                     "text": f"Suspect: {p.name}\n{d}" if d else f"Suspect: {p.name}\n(no passage about the crime)"})
    if not names:
        rows = [r for r in rows if r["mentions"] >= 2 and r["passages"]]
        rows.sort(key=lambda r: -r["mentions"])
        rows = rows[:limit]
    evidence = "\n\n".join(p.full for p in shared)
    return rows, evidence, [v.name for v in victims]


def op_suspects(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    names = cmd.get("names")
    if names is not None and not all(isinstance(n, str) for n in names):
        raise CommandError('suspects: "names" is a list of names, e.g. ["Ann Lee", "Bob Ray"]')
    limit = cmd.get("max") or MAX_SUSPECTS
    if limit < 1:
        raise CommandError('suspects: "max" must be at least 1')
    question = str(ex.s.services.get("question") or "")
    rows, evidence, victims = build(ex.s.context.text, question, names, limit)
    if not rows:
        raise CommandError("suspects: no person is named often enough in the context; give them with "
                           '{"op": "suspects", "names": [...]}')
    ex.s.variables["case_evidence"] = evidence
    table = Table.from_rows(rows, ["name", "mentions", "passages", "trace", "trace_terms", "text"])
    lines = [f"suspects: {len(rows)} people of the case file, most mentioned first"
             + (f" (the victim {', '.join(victims)} left out)" if victims else "") + ":"]
    lines += [f"- {r['name']}: {r['mentions']} mentions, {r['passages']} passage(s) about the crime" for r in rows]
    first = evidence.split("\n\n", 1)[0]
    lines.append(f"the crime: {' '.join(first.split())[:300]}")
    lines.append(f"the crime and its evidence: {evidence.count(chr(10) + chr(10)) + 1} passage(s), stored in "
                 "'case_evidence'; each suspect's passages are in the table's 'text' column.")
    lines.append('next: {"op": "examine"} states the facts about each suspect (one sub-call each).')
    return ActionOutput("\n".join(lines), meta={"value": table, "store_as": "suspects"})


# ---------------------------------------------------------------------- examine (L4)
def _find(variables: dict[str, Any], cols: tuple[str, ...], exclude: tuple[str, ...] = ()) -> str | None:
    """The newest table variable with all of ``cols`` (and none of ``exclude``)."""
    for name in reversed(list(variables)):
        v = variables[name]
        if isinstance(v, Table) and all(c in v.cols for c in cols) and not any(c in v.cols for c in exclude):
            return name
    return None


def examine(executor: Any, cmd: dict[str, Any]) -> ActionOutput:
    """The typed map over the suspects' dossiers (called by the L4 executor)."""
    from .typed_map import AnswerSpec, result_table, run_map, summary

    s = executor.s
    name = cmd.get("on") or _find(s.variables, ("name", "text"), ("alibi_broken",))
    if name is None or name not in s.variables:
        raise CommandError('examine works on the suspects: run {"op": "suspects"} first')
    table = Table.coerce(s.variables[name], "examine")
    if "name" not in table.cols or "text" not in table.cols:
        raise CommandError(f"examine: {name!r} is not a suspects table (it needs 'name' and 'text' columns); "
                           'run {"op": "suspects"} first')
    evidence = s.variables.get("case_evidence") or "(none found)"
    task = TASK.format(question=s.services.get("question") or "Who did it?", evidence=evidence)
    spec = AnswerSpec(schema=FACTS_SCHEMA)
    dossiers = [str(t) for t in table.cols["text"]]
    res = run_map(executor.d, task, dossiers, spec, 1, op="examine")
    facts = result_table(table, spec, res)
    scored = scored_facts(executor.d, task, dossiers)
    for key, values in scored.items():  # the model's calibrated yes/no where it can score them
        facts = facts.with_column(key, [v if v is not None else old for v, old in zip(values, facts.cols[key],
                                                                                        strict=True)])
    facts = Table({k: v for k, v in facts.cols.items() if k != "text"})  # the dossiers stay in the suspects table
    text = summary(res, spec, facts, executor.d.concurrency, op="examine")
    text += '\nnext: {"op": "weigh"} ranks the suspects by these facts.'
    if res.stop is not None:
        text += f"\nstopped: {res.stop} — the finished answers are kept"
        executor.d._note_stop(res.stop)
    return executor._finish(text, facts, cmd.get("store") or "facts", error=res.ok == 0)


#: each true/false fact as a yes/no question after the dossier, for a sub-model that scores labels
FACT_QUESTIONS: dict[str, str] = {
    "alibi_confirmed": "Does another person say they were with this suspect the whole time of the crime?",
    "alibi_broken": "Does a witness or a fact contradict where this suspect says they were (someone in the place "
                    "they name was alone there, or they were seen elsewhere or near the scene)?",
    "at_scene": "Was this suspect at or near the scene of the crime around its time?",
    "motive": "Did this suspect have a reason to harm the victim (money, inheritance, debt, blackmail, a secret, "
              "a quarrel)?",
    "matches_evidence": "Does a physical trace of the crime fit this suspect (a size, a colour, a brand, a limp, a "
                        "poison they could get)?",
}
YES_NO = ["yes", "no"]


def scored_facts(d: Any, task: str, dossiers: list[str]) -> dict[str, list[bool | None]]:
    """The true/false facts again, each a yes/no question the sub-model *scores* (calibrated on the same
    question about no passages: "N/A"), when it can (:func:`typed_map.scores_labels`); {} otherwise.

    Decoded inside one JSON object, the 1.5B model marked nearly every suspect "alibi confirmed" and
    none "matches the evidence"; asked one question at a time and read by probability, its lean toward
    "yes" or "no" for that question is divided out."""
    from .typed_map import AnswerSpec, run_map, scores_labels

    spec = AnswerSpec(choices=YES_NO)
    if not scores_labels(d, spec):
        return {}
    head = task.split("\nFor the suspect, state these facts", 1)[0]
    tail = "The question: " + task.split("The question: ", 1)[1] if "The question: " in task else ""
    ask = f"{head}\nAnswer the question after the record: yes only when the passages or the evidence show it.\n\n{tail}"
    out: dict[str, list[bool | None]] = {}
    for key, question in FACT_QUESTIONS.items():
        q = f"\n\nQuestion about this suspect: {question}"
        res = run_map(d, ask, [t + q for t in dossiers], spec, 1, op="examine",
                      content_free=[f"N/A{q}", q.strip(), f"?{q}"])
        out[key] = [None if v is None else v == "yes" for v in res.values]
        if res.stop is not None:
            break
    return out


# ---------------------------------------------------------------------- weigh
#: traces this close to the highest count as the physical evidence pointing at a suspect
TRACE_MARGIN = 0.5


def score(row: dict[str, Any], trace_lead: bool = False) -> tuple[int, list[str]]:
    """A suspect's points and the facts that gave them.

    A broken alibi is not also confirmed: when the sub-model says both (seen with the 1.5B model:
    "confirmed" for anyone who names a place), the break counts. ``trace_lead``: the engine's own
    reading of the physical evidence (:func:`case_file.trace`) puts this suspect on top, which counts
    as the evidence fitting them (a small sub-model almost never says so itself)."""
    facts = dict(row)
    if facts.get("alibi_broken") is True:
        facts["alibi_confirmed"] = False
    if trace_lead:
        facts["matches_evidence"] = True
    points, why = 0, []
    for key, (w, label) in WEIGHTS.items():
        if facts.get(key) is True:
            points += w
            why.append(label)
    return points, why


def rank(facts: Table) -> list[dict[str, Any]]:
    """The suspects by points, most first; on equal points the one the physical evidence points at more
    (``trace``, see :func:`case_file.trace`), then the suspects' order (most mentioned first)."""
    rows = []
    traces = [t for t in facts.cols.get("trace", []) if isinstance(t, (int, float))]
    top = max(traces) if traces and max(traces) > min(traces) else None  # None: the evidence tells no one apart
    for i, row in enumerate(facts):
        tr = row.get("trace")
        points, why = score(row, top is not None and isinstance(tr, (int, float)) and tr >= top - TRACE_MARGIN)
        ev = row.get("evidence")
        ev = ev.strip() if isinstance(ev, str) and ev.strip().casefold() not in ("", "none", "none.") else ""
        rows.append({"name": row.get("name"), "score": points, "reasons": ", ".join(why) or "nothing against them",
                     "evidence": ev, "failed": row.get("map_error"), "_t": tr if isinstance(tr, (int, float)) else 0,
                     "_i": i})
    rows.sort(key=lambda r: (-r["score"], -r["_t"], r["_i"]))
    for r in rows:
        del r["_i"], r["_t"]
    return rows


def leaders(ranking: Table) -> list[str]:
    """The names with the top score (more than one on a tie)."""
    if not len(ranking):
        return []
    top = ranking.cols["score"][0]
    return [n for n, sc in zip(ranking.cols["name"], ranking.cols["score"], strict=True) if sc == top]


def op_weigh(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    name = cmd.get("on") or _find(ex.s.variables, ("name", "alibi_broken"))
    if name is None or name not in ex.s.variables:
        raise CommandError('weigh ranks the examined suspects: run {"op": "suspects"}, then {"op": "examine"}')
    facts = Table.coerce(ex.s.variables[name], "weigh")
    missing = [k for k in ("name", *WEIGHTS) if k not in facts.cols]
    if missing:
        raise CommandError(f"weigh: {name!r} has no {', '.join(missing)} column(s); run {{\"op\": \"examine\"}} first")
    rows = rank(facts)
    ranking = Table.from_rows(rows, ["name", "score", "reasons", "evidence", "failed"])
    weights = ", ".join(f"{label} {w:+d}" for w, label in WEIGHTS.values())
    lines = [f"weigh: {len(rows)} suspect(s) ranked by the facts ({weights}):"]
    for i, r in enumerate(rows, 1):
        extra = f" — {r['evidence']}" if r["evidence"] else ""
        failed = " (the sub-call failed: no facts)" if r["failed"] else ""
        lines.append(f"{i}. {r['name']}: {r['score']:+d} ({r['reasons']}){failed}{extra}")
    top = leaders(ranking)
    if not rows or all(r["failed"] for r in rows):
        verdict = "No suspect could be examined."
    else:
        best = rows[0]
        where = next((r.get("where_they_were") for r in facts if r.get("name") == best["name"]), None)
        verdict = f"{best['name']}. Against them: {best['reasons']}."
        if isinstance(where, str) and where.strip():
            verdict += f" Their whereabouts: {where.strip().rstrip('.')}."
        if best["evidence"]:
            verdict += f" Key evidence: {best['evidence'].rstrip('.')}."
        if len(top) > 1:
            verdict += f" (Tied with {', '.join(top[1:])}.)"
    ex.s.variables["verdict"] = verdict
    lines.append(f"verdict (stored in 'verdict'): {verdict}")
    if rows:
        lines.append(f'answer: {{"op": "final", "answer": "{rows[0]["name"]}"}} or {{"op": "final_var", '
                     '"name": "verdict"}')
    return ActionOutput("\n".join(lines), meta={"value": ranking, "store_as": "ranking"})


# ---------------------------------------------------------------------- the route
class CaseRoute:
    """What a constrained model may do at each step of the case route, and the answer check."""

    def __init__(self, question: str):
        self.question = question
        #: the question wants the motive and the evidence too: the answer is the engine's verdict
        self.reasons = REASONS_Q.search(question) is not None and not NAME_ONLY.search(question)

    @staticmethod
    def applies(settings: Any, question: str, context: Context) -> bool:
        from .aids_table import structured

        return bool(getattr(settings, "case_route", True)) and case_question(question) and not structured(context)

    def route(self, variables: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]] | bool:
        """(first-turn ops, ops of this turn), or False when the route has nothing to offer."""
        first = ("suspects",)
        suspects = _find(variables, ("name", "text"), ("alibi_broken",))
        if suspects is None:
            return first, first
        if not len(variables[suspects]):
            return False
        if _find(variables, ("name", "score")) is not None:  # answer: the verdict, or a name of the ranking
            return first, ("final_var",) if self.reasons and "verdict" in variables else ("final",)
        if _find(variables, ("name", "alibi_broken")) is not None:
            return first, ("weigh",)
        return first, ("examine",)

    def overrides(self, variables: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The answer of a ranked case: the verdict variable, or one of the ranked names (leader first)."""
        out: dict[str, dict[str, Any]] = {}
        if "verdict" in variables:
            out["final_var"] = {"name": {"enum": ["verdict"]}}
        name = _find(variables, ("name", "score"))
        if name is not None and len(variables[name]):
            out["final"] = {"answer": {"enum": [str(n) for n in variables[name].cols["name"]]}}
        return out

    def check_answer(self, answer: str, variables: dict[str, Any]) -> tuple[bool, str | None]:
        """(answer names the ranking's leader, the message that sends it back when it does not)."""
        name = _find(variables, ("name", "score"))
        if name is None:
            return False, None
        ranking: Table = variables[name]
        top = leaders(ranking)
        if not top or all(ranking.cols["failed"]):
            return False, None
        everyone = cf.people("\n".join(str(n) for n in ranking.cols["name"]))
        if any(_names(answer, n, everyone) for n in top):
            return True, None
        row = ranking.row(0)
        msg = (f"check: the engine's ranking puts {row['name']} first ({row['score']:+d}: {row['reasons']}); your "
               f"answer does not name {' or '.join(top)}. Send the final command again naming the culprit "
               "(unless the facts above clearly show someone else).")
        return False, msg


def _names(answer: str, name: str, everyone: list[cf.Person]) -> bool:
    """Whether ``answer`` names the person ``name`` (their full name, or a part only they have)."""
    if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", answer, re.I):
        return True
    person = next((p for p in everyone if p.name == name or p.key in name), None)
    return person is not None and person.pattern().search(answer) is not None


for _op in ("suspects", "weigh"):
    register_op(_op, SPECS[_op], op_suspects if _op == "suspects" else op_weigh)
