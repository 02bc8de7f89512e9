"""Writes examples/data/city-extraction-{train,eval}.jsonl: an instruction dataset the project makes itself.

Task: pull the city and country out of a sentence and answer as JSON. Base chat models answer in
prose; a short fine-tune teaches the format. Evaluation rows use cities and sentence templates that
never appear in training, so the held-out loss measures the learned skill, not memorisation.

License: the sentences and this script are written by the ftlaunch authors and released under
Apache-2.0 with the rest of the project; city and country names are facts.

    python examples/make_city_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CITIES = [
    ("Paris", "France"), ("Berlin", "Germany"), ("Madrid", "Spain"), ("Rome", "Italy"), ("Lisbon", "Portugal"),
    ("Vienna", "Austria"), ("Prague", "Czechia"), ("Warsaw", "Poland"), ("Dublin", "Ireland"),
    ("Oslo", "Norway"), ("Stockholm", "Sweden"), ("Helsinki", "Finland"), ("Copenhagen", "Denmark"),
    ("Athens", "Greece"), ("Budapest", "Hungary"), ("Brussels", "Belgium"), ("Amsterdam", "Netherlands"),
    ("Zurich", "Switzerland"), ("Tokyo", "Japan"), ("Osaka", "Japan"), ("Seoul", "South Korea"),
    ("Beijing", "China"), ("Shanghai", "China"), ("Mumbai", "India"), ("Delhi", "India"),
    ("Bangkok", "Thailand"), ("Hanoi", "Vietnam"), ("Jakarta", "Indonesia"), ("Manila", "Philippines"),
    ("Sydney", "Australia"), ("Melbourne", "Australia"), ("Auckland", "New Zealand"), ("Toronto", "Canada"),
    ("Vancouver", "Canada"), ("Chicago", "United States"), ("Boston", "United States"),
    ("Seattle", "United States"), ("Mexico City", "Mexico"), ("Bogota", "Colombia"), ("Lima", "Peru"),
    ("Santiago", "Chile"), ("Buenos Aires", "Argentina"), ("Cairo", "Egypt"), ("Nairobi", "Kenya"),
    ("Lagos", "Nigeria"), ("Accra", "Ghana"), ("Casablanca", "Morocco"), ("Istanbul", "Turkey"),
    # held out for evaluation
    ("Kyoto", "Japan"), ("Porto", "Portugal"), ("Munich", "Germany"), ("Seville", "Spain"),
    ("Krakow", "Poland"), ("Montreal", "Canada"), ("Perth", "Australia"), ("Quito", "Ecuador"),
    ("Tunis", "Tunisia"), ("Riga", "Latvia"), ("Busan", "South Korea"), ("Denver", "United States"),
]
N_EVAL_CITIES = 12

TEMPLATES = [
    "Last spring I flew to {city} for a week and loved the food.",
    "Our company is opening a new office in {city} next year.",
    "She grew up in {city} before moving abroad for university.",
    "The conference will take place in {city} this October.",
    "We missed our connecting flight and spent a night in {city}.",
    "My grandparents still live in a small flat in {city}.",
    "The marathon in {city} attracts runners from all over the world.",
    "He sent me a postcard from {city} with a picture of the old town.",
    "The band ends its world tour with two concerts in {city}.",
    "After the meeting in {city}, the team took the train home.",
    "A new museum of modern art just opened in {city}.",
    "They are looking for an apartment near the river in {city}.",
    # held out for evaluation
    "I am writing to you from a rainy cafe in {city}.",
    "The startup moved its headquarters to {city} last month.",
    "Our cousins visited {city} on their honeymoon.",
]
N_EVAL_TEMPLATES = 3
INSTRUCTION = "Extract the city and the country from the text. Answer with JSON only."


def row(city: str, country: str, template: str) -> dict[str, str]:
    return {"instruction": INSTRUCTION, "input": template.format(city=city),
            "output": json.dumps({"city": city, "country": country})}


def main() -> None:
    rng = random.Random(7)
    train_cities, eval_cities = CITIES[:-N_EVAL_CITIES], CITIES[-N_EVAL_CITIES:]
    train_templates, eval_templates = TEMPLATES[:-N_EVAL_TEMPLATES], TEMPLATES[-N_EVAL_TEMPLATES:]
    train = [row(c, k, t) for c, k in train_cities for t in train_templates]
    evaluation = [row(c, k, t) for c, k in eval_cities for t in eval_templates]
    rng.shuffle(train)
    rng.shuffle(evaluation)
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for name, rows in (("train", train), ("eval", evaluation)):
        with open(out / f"city-extraction-{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"wrote {len(rows)} rows to {out / f'city-extraction-{name}.jsonl'}")


if __name__ == "__main__":
    main()
