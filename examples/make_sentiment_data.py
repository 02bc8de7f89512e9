"""Writes examples/data/sentiment-{train,eval}.jsonl: a sentiment set with negation and contrast that the
project makes itself.

Whether a sentence is positive or negative depends on composition, not on a keyword: "was not great",
"anything but awful", "expected it to be dreadful, but it was lovely". Evaluation rows use adjectives,
things and sentence patterns that never occur in training, so held-out accuracy measures how well a
technique turns the pretrained encoder's knowledge into the rule — and it separates techniques that a
keyword task would not.

License: written by the ftlaunch authors, released under Apache-2.0 with the rest of the project.

    python examples/make_sentiment_data.py
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

POSITIVE = (["great", "wonderful", "excellent", "delightful", "superb", "fantastic", "lovely", "brilliant"],
            ["marvelous", "terrific", "splendid", "outstanding"])
NEGATIVE = (["awful", "terrible", "dreadful", "horrible", "poor", "disappointing", "bad", "boring"],
            ["atrocious", "abysmal", "lousy", "mediocre"])
THINGS = (["movie", "meal", "hotel", "concert", "book", "service", "trip", "game", "show", "lecture"],
          ["museum tour", "album", "restaurant", "flight"])

# (template, which adjective decides, whether the sentence flips it)
TRAIN_TEMPLATES = [
    ("The {t} was {a}.", "a", False),
    ("The {t} was not {a}.", "a", True),
    ("I expected the {t} to be {b}, but it was {a}.", "a", False),
    ("Honestly, the {t} was anything but {a}.", "a", True),
    ("Nobody could call the {t} {a}.", "a", True),
    ("The {t} turned out {a}, just as everyone said.", "a", False),
]
EVAL_TEMPLATES = [
    ("The {t} was far from {a}.", "a", True),
    ("Even though I hoped it would be {b}, the {t} was {a}.", "a", False),
    ("It would be wrong to say the {t} was {a}.", "a", True),
    ("Everyone agreed the {t} felt {a}.", "a", False),
]


def rows(adjectives: tuple[list[str], list[str]], things: list[str], templates: list, rng: random.Random) -> list[dict]:
    positive, negative = adjectives
    out = []
    for template, _, flips in templates:
        for polarity, words, others in (("positive", positive, negative), ("negative", negative, positive)):
            for a, t in itertools.product(words, things):
                label = polarity if not flips else ("negative" if polarity == "positive" else "positive")
                out.append({"text": template.format(t=t, a=a, b=rng.choice(others)), "label": label})
    return out


def main() -> None:
    rng = random.Random(5)
    train = rows((POSITIVE[0], NEGATIVE[0]), THINGS[0], TRAIN_TEMPLATES, rng)
    evaluation = rows((POSITIVE[1], NEGATIVE[1]), THINGS[1], EVAL_TEMPLATES, rng)
    rng.shuffle(train)
    rng.shuffle(evaluation)
    train = train[:600]
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for name, data in (("train", train), ("eval", evaluation)):
        path = out / f"sentiment-{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
        print(f"wrote {len(data)} rows to {path}")


if __name__ == "__main__":
    main()
