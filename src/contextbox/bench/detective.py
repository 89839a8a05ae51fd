"""``detective``: a generated mystery with one culprit that follows from the evidence.

Five suspects each claim to have been somewhere when the victim died. Staff witnesses either
confirm a suspect's alibi or break it. A physical clue matches two suspects. Exactly one
suspect both matches the clue and has a broken alibi: the culprit. The red herrings are a
suspect with a broken alibi who does not match the clue, and one who matches the clue but
whose alibi holds. Every suspect has a motive, so motive decides nothing.

The default case file is about 100,000 characters (some 25,000 tokens, past the 16k-token
window of the local model): the evidence documents are spread through generated distractor
documents of the same household — afternoon accounts, letters, ledgers, inventories, the
valet's wardrobe notes (other kinds of attribute than the clue's), the village gazette. None of
them speaks of the hour of the death, so the culprit still follows from the evidence alone.
``--lengths N`` sets the case file's size; 0 is the evidence documents alone.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .distractors import distractor_documents
from .tasks import Task, register, spread

FIRST = ["Arthur", "Beatrice", "Cecil", "Dorothy", "Edmund", "Florence", "Gerald", "Harriet", "Ivor", "Julia",
         "Lionel", "Margaret", "Neville", "Ottoline", "Percival", "Rosamund", "Sebastian", "Theodora"]
LAST = ["Ashdown", "Blackwood", "Carrow", "Dunmore", "Everleigh", "Fairbanks", "Greaves", "Hollis", "Ingram",
        "Kestrel", "Lockhart", "Marchbank", "Northcote", "Pennifold", "Quarles", "Rutherford", "Stanwick"]
STAFF = [("the butler", "Mr. Pryce"), ("the cook", "Mrs. Dobbs"), ("the housemaid", "Ellen Marsh"),
         ("the gardener", "Tom Fenwick"), ("the chauffeur", "Mr. Oakes"), ("the footman", "James Lark")]
ROOMS = ["drawing room", "billiard room", "conservatory", "kitchen garden", "chapel", "music room", "stables",
         "morning room"]
MOTIVES = ["stood to inherit a share of the estate", "owed the victim a large gambling debt",
           "had been threatened with dismissal", "was jealous of the victim's engagement",
           "had been cut out of the will last month", "was being blackmailed by the victim",
           "had quarrelled loudly with the victim at dinner"]
CLUES = {
    "boots": ("Muddy footprints under the library window were made by size {v} boots.",
              "{name} wears size {v} boots.", [str(s) for s in range(6, 13)]),
    "thread": ("A thread of {v} wool was caught on the latch of the library window.",
               "{name} wore a {v} wool coat that evening.", ["green", "grey", "crimson", "navy", "mustard",
                                                              "brown", "violet"]),
    "cigar": ("The ash in the library tray came from a {v} cigar.",
              "{name} smokes only {v} cigars.", ["Havana", "Manila", "Sumatra", "Dutch", "Cuban cheroot",
                                                  "Virginia"]),
}


def make_case(rng: random.Random) -> dict[str, Any]:
    """The cast, the evidence and the culprit of one mystery."""
    names = [f"{f} {s}" for f, s in zip(rng.sample(FIRST, 6), rng.sample(LAST, 6), strict=True)]
    victim, suspects = names[0], names[1:]
    rooms = rng.sample(ROOMS, 5)
    staff = rng.sample(STAFF, 5)
    clue_kind = rng.choice(sorted(CLUES))
    values = rng.sample(CLUES[clue_kind][2], 4)
    roles = ["culprit", "broken", "match", "clear", "clear"]
    rng.shuffle(roles)
    attrs: dict[str, str] = {}
    others = iter(values[1:])
    for s, role in zip(suspects, roles, strict=True):
        attrs[s] = values[0] if role in ("culprit", "match") else next(others)
    return {"victim": victim, "suspects": suspects, "roles": dict(zip(suspects, roles, strict=True)),
            "rooms": dict(zip(suspects, rooms, strict=True)), "staff": dict(zip(suspects, staff, strict=True)),
            "motives": dict(zip(suspects, rng.sample(MOTIVES, 5), strict=True)), "clue_kind": clue_kind,
            "clue_value": values[0], "attrs": attrs,
            "culprit": next(s for s, r in zip(suspects, roles, strict=True) if r == "culprit")}


def case_documents(case: dict[str, Any], rng: random.Random) -> list[str]:
    """The case file as separate documents, in a shuffled but fixed order."""
    v = case["victim"]
    docs = [f"POLICE REPORT. {v} was found dead in the library of Harrowgate Manor at a quarter past ten. "
            "The doctor places the death between nine and ten o'clock. The library window was open."]
    fmt_clue, fmt_attr, _ = CLUES[case["clue_kind"]]
    docs.append("FORENSIC NOTE. " + fmt_clue.format(v=case["clue_value"]) + " No other trace was found.")
    docs.append("INSPECTOR'S NOTES ON THE SUSPECTS. " + " ".join(
        fmt_attr.format(name=s, v=case["attrs"][s]) for s in case["suspects"]))
    for s in case["suspects"]:
        room = case["rooms"][s]
        docs.append(f"STATEMENT OF {s.upper()}. \"From nine until ten I was in the {room}. I did not go near the "
                    f"library.\" The inspector notes that {s} {case['motives'][s]}.")
        role_title, wname = case["staff"][s]
        if case["roles"][s] in ("culprit", "broken"):
            text = (f"\"I was in the {room} the whole time from nine until ten, and I was alone there. "
                    f"Nobody else came in.\"")
        else:
            text = (f"\"From nine until ten I was in the {room} with {s}, and {s} never left the room.\"")
        docs.append(f"STATEMENT OF {wname.upper()}, {role_title}. {text}")
    first, rest = docs[:1], docs[1:]
    rng.shuffle(rest)
    return first + rest


QUESTION = ("The context holds the case file of a murder. Who killed {victim}? The culprit is the one suspect "
            "whose alibi is broken by a witness and who matches the physical evidence. Answer with the "
            "culprit's full name only.")


DETECTIVE_LENGTHS = [100_000]


def bury(docs: list[str], filler: list[str]) -> str:
    """The evidence ``docs`` spread evenly through the ``filler`` documents (the first one stays first)."""
    slots = [round(d * len(filler)) for d in spread(len(docs) - 1, 0.02, 0.98)] if len(docs) > 1 else []
    out = [docs[0]]
    j = 0
    for doc, at in zip(docs[1:], slots, strict=True):
        out += filler[j:at]
        out.append(doc)
        j = max(j, at)
    out += filler[j:]
    return "\n\n".join(out) + "\n"


@register("detective", DETECTIVE_LENGTHS)
def detective(n: int, seed: int, lengths: list[int] | None, data: Path | None) -> list[Task]:
    """``n`` mysteries per length: a case file of about ``length`` characters (0: the evidence alone)."""
    tasks: list[Task] = []
    for length in lengths or DETECTIVE_LENGTHS:
        for i in range(n):
            rng = random.Random(f"detective:{seed}:{length}:{i}")
            case = make_case(rng)
            docs = case_documents(case, rng)
            room = max(0, length - sum(len(d) + 2 for d in docs))
            filler = distractor_documents(case, rng, room) if room else []
            context = bury(docs, filler)
            q = QUESTION.format(victim=case["victim"])
            tasks.append(Task("detective", f"detective-{length}-{i}", q, context, case["culprit"], "name",
                              length or len(context),
                              meta={"suspects": case["suspects"], "roles": case["roles"], "clue": case["clue_kind"],
                                    "documents": len(docs) + len(filler)}))
    return tasks
