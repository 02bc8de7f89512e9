"""Writes examples/data/topics-{train,eval}.jsonl: a 4-way topic classification set the project makes itself.

Each sentence names one thing from a topic (sports, technology, food, travel) inside a neutral
template. Evaluation rows use things and templates that never occur in training, so a model can only
classify them through what its pretraining knows about those words: the held-out accuracy separates
techniques that keep and use the pretrained encoder well from those that overfit the training words.

License: written by the ftlaunch authors, released under Apache-2.0 with the rest of the project.

    python examples/make_topic_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    "sports": (["football", "tennis", "marathon", "goalkeeper", "basketball", "swimming", "cycling race",
                "golf tournament", "boxing match", "volleyball", "ski jump", "hockey game", "referee",
                "penalty kick", "sprinter", "relay team"],
               ["rugby", "badminton", "cricket match", "pole vault", "wrestling bout", "triathlon"]),
    "technology": (["laptop", "smartphone", "software update", "database", "compiler", "graphics card",
                    "wifi router", "operating system", "cloud server", "keyboard", "microchip", "robot arm",
                    "web browser", "password manager", "hard drive", "touchscreen"],
                   ["processor", "firmware", "bluetooth headset", "neural network", "data center", "tablet"]),
    "food": (["pasta", "chocolate cake", "sushi", "pizza", "salad", "omelette", "curry", "bread", "soup",
              "pancakes", "cheese", "grilled fish", "dumplings", "ice cream", "taco", "roast chicken"],
             ["risotto", "croissant", "noodles", "lasagna", "burrito", "apple pie"]),
    "travel": (["flight", "hotel", "passport", "train ticket", "suitcase", "beach resort", "airport",
                "road trip", "cruise", "hostel", "tour guide", "visa", "boarding pass", "campsite",
                "luggage", "city map"],
               ["ferry", "jet lag", "backpacking trip", "travel insurance", "layover", "sightseeing bus"]),
}
TRAIN_TEMPLATES = [
    "Everyone kept talking about the {w} all afternoon.",
    "I read a long article about the {w} this morning.",
    "My sister has strong opinions on the {w}.",
    "The {w} was the main topic at dinner yesterday.",
    "We spent the whole weekend thinking about the {w}.",
    "There was a short news story about the {w}.",
]
EVAL_TEMPLATES = [
    "Nobody expected the {w} to get so much attention.",
    "The podcast episode this week focused on the {w}.",
]


def main() -> None:
    rng = random.Random(11)
    train, evaluation = [], []
    for label, (seen, unseen) in TOPICS.items():
        train += [{"text": t.format(w=w), "label": label} for w in seen for t in TRAIN_TEMPLATES]
        evaluation += [{"text": t.format(w=w), "label": label} for w in unseen for t in EVAL_TEMPLATES]
    rng.shuffle(train)
    rng.shuffle(evaluation)
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for name, rows in (("train", train), ("eval", evaluation)):
        path = out / f"topics-{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
