"""Distractor documents for the ``detective`` case file: the same household, nothing about the death.

Every document names the suspects, staff and rooms of the case, so the evidence cannot be found
by looking for names alone; none speaks of the evening hour of the death, of anyone being alone,
or of the clue's kind of attribute, so the culprit still follows from the evidence documents
(:mod:`.detective`). All text is drawn from ``rng``: the same case gives the same file.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

AFTERNOON = ["one", "two", "three", "four", "five"]
CHORES = ["polished the silver for the dinner", "aired the linen in the east wing", "carried coal to the upper rooms",
          "mended a hinge on the orangery door", "sorted the morning post", "counted the wine in the cellar",
          "raked the gravel of the front drive", "brushed the guests' travelling coats", "washed the breakfast china",
          "trimmed the lamps on the landing", "cleaned the brass in the hall", "fetched ice from the ice house"]
ACTIVITIES = ["reading a newspaper", "writing letters", "playing patience", "arguing about the cricket scores",
              "looking at the old maps", "arranging flowers", "drinking tea", "winding the clocks",
              "talking about the shooting party", "sketching the view", "studying a railway timetable",
              "turning over old photographs"]
RELATIVES = ["my dear sister", "Aunt Cordelia", "my cousin Hugh", "dearest Mama", "my old friend Rupert",
             "Uncle Bertram", "my godmother"]
LETTER_LINES = [
    "The weather here has been changeable, with rain coming off the moor every afternoon.",
    "The house is much as you remember it, though the east wing is shut up to save coal.",
    "We dined on a saddle of mutton that the cook was very proud of.",
    "The roads from the station were so bad that the motor had to be pushed up the last hill.",
    "There is talk of a garden fête in the village at the end of the month.",
    "I have been reading the new novel everyone talks of and find it very dull.",
    "The horses are in fine condition and the grey mare has recovered from her lameness.",
    "Do send me the address of your dressmaker; mine has quite lost her touch.",
    "The vicar called on Tuesday and stayed far too long over the sherry.",
    "I hope the children are well and that Freddie has stopped climbing the apple trees.",
    "The new gramophone in the music room is the wonder of the household.",
    "We had a long walk to the ruined abbey and were caught by a shower on the way back.",
    "Nobody can agree on whether the lake should be dredged this year.",
    "I lost four shillings at bridge and shall not play again until Christmas.",
]
ITEMS = [("pounds of candles", "Harker & Sons"), ("sacks of flour", "the mill at Edgecombe"),
         ("bottles of claret", "Berry Brothers"), ("tons of coal", "the railway yard"),
         ("yards of curtain velvet", "Liberty's"), ("pounds of tea", "Twinings"), ("tins of boot polish", "the Stores"),
         ("dozen eggs", "Home Farm"), ("gallons of lamp oil", "the ironmonger"), ("boxes of matches", "the Stores"),
         ("pounds of sugar", "the grocer in Wexcombe"), ("bars of soap", "Pears"), ("reams of notepaper", "Smith's")]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
OBJECTS = ["a walnut bureau with brass handles", "a pair of Chinese vases", "a long-case clock by Tompion",
           "a faded Turkey carpet", "six chairs covered in green damask", "a portrait of the third baronet",
           "a glass case of stuffed birds", "a mahogany card table", "a harp with two broken strings",
           "a bookcase of bound sermons", "a fire screen worked in petit point", "a barometer that reads Change",
           "a bronze of a rearing horse", "a tapestry of a hunting scene", "a cabinet of seashells"]
NEWS = [
    "The parish council met on Thursday to discuss the drainage of the lower meadow.",
    "Mr. Pollard's prize marrow took first place at the Wexcombe show for the third year running.",
    "The new schoolmistress has arrived and taken lodgings over the bakery.",
    "A hay cart overturned on the Edgecombe road; nobody was hurt, though the hay was lost.",
    "The bell ringers practised for the harvest festival and were heard as far as the mill.",
    "The cricket eleven lost to Milbury by four wickets after a spirited innings by the blacksmith.",
    "Subscriptions for the repair of the church roof now stand at forty-one pounds.",
    "The railway company announces a later Sunday train from the junction from next month.",
    "Poachers were seen on the estate woods and the keeper has set extra watches.",
    "The Women's Institute will hold a lecture on bee keeping in the village hall.",
]
MENU = ["clear turtle soup", "turbot with lobster sauce", "roast pheasant", "a saddle of lamb", "a lemon soufflé",
        "angels on horseback", "a Stilton", "peaches from the hothouse", "ices", "a raised game pie"]
#: the valet's notes use every clue kind except the case's own (so they never match the evidence)
WARDROBE = {
    "boots": "{name} keeps {v} pairs of boots in the dressing room.",
    "thread": "{name} brought a {v} travelling rug.",
    "cigar": "{name} keeps a case of {v} cigarettes.",
}
WARDROBE_VALUES = {"boots": ["two", "three", "four", "five"], "thread": ["tartan", "striped", "checked", "plain"],
                   "cigar": ["Turkish", "Egyptian", "Russian", "Greek"]}


def _names(case: dict[str, Any]) -> list[str]:
    return list(case["suspects"])


def _staff(case: dict[str, Any]) -> list[tuple[str, str]]:
    return list(case["staff"].values())


def _rooms(case: dict[str, Any]) -> list[str]:
    from .detective import ROOMS

    return ROOMS


def afternoon_account(case: dict[str, Any], rng: random.Random) -> str:
    role, name = rng.choice(_staff(case))
    h = rng.randrange(len(AFTERNOON) - 1)
    parts = [f"AFTERNOON ACCOUNT OF {name.upper()}, {role}, taken down by the sergeant.",
             f"\"Between {AFTERNOON[h]} and {AFTERNOON[h + 1]} in the afternoon I {rng.choice(CHORES)}."]
    for _ in range(rng.randint(3, 6)):
        who, room = rng.choice(_names(case)), rng.choice(_rooms(case))
        parts.append(f"I saw {who} in the {room}, {rng.choice(ACTIVITIES)}, at about half past "
                     f"{AFTERNOON[h]} in the afternoon.")
        if rng.random() < 0.5:
            parts.append(rng.choice(["It was raining hard by then.", "The post had just come.",
                                     "Tea was late that day.", "The dogs were barking at the gardener's cart."]))
    parts.append(f"After that I {rng.choice(CHORES)}.\"")
    return " ".join(parts)


def letter(case: dict[str, Any], rng: random.Random) -> str:
    who = rng.choice(_names(case))
    body = " ".join(rng.sample(LETTER_LINES, rng.randint(5, 8)))
    return (f"LETTER FOUND IN THE {rng.choice(_rooms(case)).upper()}, written by {who} to "
            f"{rng.choice(RELATIVES)}, dated the {rng.randint(2, 27)}th of {rng.choice(MONTHS)}. "
            f"\"{body} Yours ever, {who.split()[0]}.\"")


def ledger(case: dict[str, Any], rng: random.Random) -> str:
    month = rng.choice(MONTHS)
    rows = []
    for day in sorted(rng.sample(range(1, 29), rng.randint(10, 16))):
        qty, (item, shop) = rng.randint(2, 40), rng.choice(ITEMS)
        rows.append(f"{day} {month}: {qty} {item} from {shop}, £{rng.randint(0, 9)} {rng.randint(0, 19)}s.")
    role, name = rng.choice(_staff(case))
    return f"HOUSEHOLD LEDGER FOR {month.upper()}, kept by {name}, {role}. " + " ".join(rows)


def inventory(case: dict[str, Any], rng: random.Random) -> str:
    room = rng.choice(_rooms(case))
    things = rng.sample(OBJECTS, rng.randint(6, 10))
    return (f"INVENTORY OF THE {room.upper()}, made for the insurers last spring. The room contains "
            + "; ".join(things) + f". The {room} was last redecorated in {rng.randint(1880, 1912)}. "
            f"Its windows face the {rng.choice(['north', 'south', 'east', 'west'])}.")


def gazette(case: dict[str, Any], rng: random.Random) -> str:
    items = rng.sample(NEWS, rng.randint(4, 7))
    guest = rng.choice(_names(case))
    items.insert(rng.randrange(len(items) + 1),
                 f"{guest} is staying at Harrowgate Manor and was seen at the Wexcombe show.")
    return "EXTRACT FROM THE WEXCOMBE GAZETTE. " + " ".join(items)


def wardrobe(case: dict[str, Any], rng: random.Random) -> str:
    kinds = [k for k in WARDROBE if k != case["clue_kind"]]
    lines = []
    for s in _names(case):
        k = rng.choice(kinds)
        lines.append(WARDROBE[k].format(name=s, v=rng.choice(WARDROBE_VALUES[k])))
    rng.shuffle(lines)
    return "THE VALET'S NOTES ON THE GUESTS' LUGGAGE. " + " ".join(lines)


def dinner(case: dict[str, Any], rng: random.Random) -> str:
    names = _names(case)
    rng.shuffle(names)
    return ("MENU AND SEATING FOR DINNER ON THE DAY BEFORE. The courses were " + ", ".join(rng.sample(MENU, 6))
            + ". Seated from the head of the table: " + ", ".join(names) + ". The party rose from the table "
            "early and the gentlemen took their port in the billiard room.")


KINDS: list[Callable[[dict[str, Any], random.Random], str]] = [
    afternoon_account, afternoon_account, letter, letter, ledger, inventory, gazette, dinner, wardrobe]


def distractor_documents(case: dict[str, Any], rng: random.Random, chars: int) -> list[str]:
    """Distractor documents of about ``chars`` characters in all (each kind at least once when room allows)."""
    docs: list[str] = []
    total = 0
    order = KINDS[:]
    while total < chars:
        rng.shuffle(order)
        for kind in order:
            doc = kind(case, rng)
            docs.append(doc)
            total += len(doc) + 2
            if total >= chars:
                break
    return docs
