"""Writes the sample datasets in examples/data/ from the hand-written vocabularies below.

Seeded and deterministic: running it again gives the same bytes (a test checks the files).
Usage: python examples/make_samples.py [OUT_DIR]
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from pathlib import Path

SEED = 1234
OUT_DIR = Path(__file__).parent / "data"

# ---- sentiment: reviews of products, films, dishes and restaurants -----------------------
# Each domain: subjects, positive and negative predicates. Negations sit on both sides
# ("was not bad at all" / "was not worth the money") so single keywords do not decide.
SENTIMENT = {
    "product": (
        [
            "This blender", "The backpack", "My new keyboard", "The phone case",
            "This coffee maker", "The desk lamp", "This vacuum cleaner", "The laptop stand",
            "The electric kettle", "This air fryer",
        ],
        [
            "works perfectly", "exceeded my expectations", "was worth every penny",
            "is not bad at all for the price", "has not let me down once",
            "feels solid and well made", "arrived early and works like a charm",
            "is the best purchase I have made this year", "does exactly what it promises",
            "still works great after six months", "never gave me a single problem",
            "made my mornings so much easier",
        ],
        [
            "stopped working after a week", "was a waste of money", "is not worth the price",
            "feels cheap and flimsy", "broke the second time I used it", "never worked properly",
            "is far worse than the reviews suggested", "arrived scratched and missing parts",
            "is not something I would buy again", "makes an awful rattling noise",
            "did not last a month", "was nothing like the pictures",
        ],
    ),
    "film": (
        [
            "This movie", "The film", "The sequel", "The documentary", "The series finale",
            "This comedy", "The thriller", "The animated film",
        ],
        [
            "kept me on the edge of my seat", "was funny, warm and surprisingly moving",
            "was not boring for a single minute", "had a brilliant cast", "is a small masterpiece",
            "made me laugh out loud more than once", "was better than the original",
            "has a plot that stays with you for days", "did not waste a single scene",
            "was beautifully shot and well acted",
        ],
        [
            "dragged on for far too long", "was a complete bore", "was not funny at all",
            "had a plot full of holes", "wasted a talented cast", "put me to sleep halfway through",
            "was not worth the ticket price", "felt like a cheap copy of the first one",
            "had dialogue that made me cringe", "fell apart in the last hour",
        ],
    ),
    "dish": (
        [
            "The pasta", "The curry", "The soup", "The burger", "The chocolate cake", "The pizza",
            "The ramen", "The salad",
        ],
        [
            "was cooked to perfection", "was fresh and full of flavour",
            "was not too salty, just right", "tasted even better than it looked",
            "was generous and delicious", "is the best I have had in this city",
            "had me planning my next visit", "was hot, fresh and perfectly seasoned",
        ],
        [
            "arrived cold and soggy", "was bland and overpriced", "was not cooked through",
            "tasted like it had been reheated", "was far too salty to finish",
            "was tiny for the price", "was not fresh at all", "left me feeling sick",
        ],
    ),
    "place": (
        [
            "The service", "Our waiter", "This restaurant", "The staff", "The little cafe",
            "The hotel bar", "The bakery on the corner",
        ],
        [
            "was friendly and attentive", "made us feel welcome from the start",
            "never kept us waiting", "deserves every one of its five stars",
            "was relaxed, cosy and spotless", "could not have been more helpful",
            "was not crowded and the music was perfect", "is worth the trip across town",
        ],
        [
            "was rude and slow", "ignored us for twenty minutes", "was not clean at all",
            "got our order wrong twice", "was noisy and cramped",
            "could not have cared less about us", "charged us for things we never ordered",
            "was not worth the long wait",
        ],
    ),
}
OPENERS = [
    "Honestly", "To be fair", "I have to say", "After a few weeks", "Overall", "Long story short",
    "For what it's worth", "Believe it or not",
]
TAILS = {
    "positive": [
        "so I have already recommended it to friends", "and I would happily go again",
        "which I did not expect", "and I have no complaints", "so it gets five stars",
    ],
    "negative": [
        "so I asked for a refund", "and I will not be back", "which was a shame", "and I regret it",
        "so it gets one star from me",
    ],
}
# What the reviewer expected: the opposite of how it turned out, so the positive word
# "great" appears in negative reviews and "awful" in positive ones.
EXPECTED = {
    "positive": ["a letdown", "awful", "mediocre", "boring", "overrated"],
    "negative": ["great", "amazing", "worth it", "a treat", "excellent"],
}


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:]


def _review(rng: random.Random, label: str) -> str:
    domain = rng.choice(sorted(SENTIMENT))
    subjects, positive, negative = SENTIMENT[domain]
    subject = rng.choice(subjects)
    predicate = rng.choice(positive if label == "positive" else negative)
    pattern = rng.randrange(4)
    if pattern == 0 or (pattern == 3 and domain == "place"):  # "it" does not fit a waiter
        return f"{subject} {predicate}."
    if pattern == 1:
        return f"{rng.choice(OPENERS)}, {_lower_first(subject)} {predicate}."
    if pattern == 2:
        return f"{subject} {predicate}, {rng.choice(TAILS[label])}."
    expected = rng.choice(EXPECTED[label])
    return f"I expected {_lower_first(subject)} to be {expected}, but it {predicate}."


# ---- intents: a bank and shop assistant --------------------------------------------------
ACCOUNTS = ["checking account", "savings account", "current account", "joint account", "business account"]
PEOPLE = ["my sister", "my landlord", "Anna", "my brother", "Tom", "my mum", "the plumber", "my flatmate"]
AMOUNTS = ["50", "20 euros", "$100", "250 dollars", "75 pounds", "1,000", "30 bucks", "$15"]
DAYS = [
    "on Sunday", "on Saturday", "tomorrow", "today", "on public holidays", "on Christmas Eve",
    "this weekend", "on Monday morning",
]
CARDS = ["card", "debit card", "credit card", "bank card", "Visa card"]
PLACES = ["at the shop", "on the bus", "at the gym", "in a taxi", "at the airport", "at a restaurant"]
ORDERS = [
    "my order", "order 48213", "the order I placed yesterday", "my last purchase",
    "order number 77120", "the shoes I ordered", "my subscription box", "that order",
]
INTENTS = {
    "check_balance": [
        "How much money is in my {account}?", "What's the balance on my {account}?",
        "Can you tell me my {account} balance?", "Show me how much I have left in my {account}",
        "I need to know my current balance", "balance of {account} please",
        "Do I have enough money in my {account} to pay {person} {amount}?",
        "How much can I still spend this month?", "what is left on my {account}",
        "Check my {account} for me",
    ],
    "transfer_money": [
        "Send {amount} to {person}", "I want to transfer {amount} to {person}",
        "Move {amount} from my {account} to my credit card", "Can you pay {person} {amount} {day}?",
        "Please wire {amount} to {person}", "transfer {amount} into my {account}",
        "How do I send money to {person}?", "Pay back {person} the {amount} I owe",
        "Set up a payment of {amount} to {person}",
    ],
    "card_lost": [
        "I lost my {card}", "I lost my {card} {place}", "My {card} was stolen {day}",
        "I can't find my {card} anywhere", "Someone stole my wallet with my {card} in it",
        "Please block my {card}, it's missing", "my {card} is gone, what do I do",
        "I think I left my {card} {place}", "Freeze my {card} right now, I lost it",
        "How do I report a stolen {card}?", "I need a new {card} because mine was stolen",
        "I dropped my {card} somewhere {place}",
    ],
    "opening_hours": [
        "When are you open {day}?", "What time does the branch close {day}?", "Are you open {day}?",
        "What are your opening hours?", "opening times {day}?", "How late is the store open {day}?",
        "Is the branch open {day}?", "What time do you open {day}?",
        "until when can I come in {day}", "What are your hours {day}?",
        "Can I visit the branch {day}?", "When do you close?", "Is anyone at the office {day}?",
    ],
    "greeting": [
        "{hello}", "{hello}!", "{hello} {whom}", "{hello} {whom}!", "{hello}, how are you?",
        "{hello} {whom}, anyone there?", "{hello}, good to see you", "{hello} {whom} :)",
    ],
    "cancel_order": [
        "Cancel {order}", "I want to cancel {order}", "Please stop {order} from shipping",
        "Can I still cancel {order}?", "I changed my mind, cancel {order}",
        "how do I cancel {order}", "Don't send {order}, I no longer need it",
        "I ordered by mistake, please cancel {order}", "Call off {order} please",
        "Please cancel {order} before it ships", "Cancel {order} and refund me",
    ],
}
HELLOS = [
    "Hi", "Hello", "Hey", "Good morning", "Good afternoon", "Good evening", "Hiya", "Greetings",
    "Morning", "Howdy",
]
WHOM = ["there", "team", "bot", "folks", "everyone", "assistant"]


def _utterance(rng: random.Random, intent: str) -> str:
    template = rng.choice(INTENTS[intent])
    return template.format(
        account=rng.choice(ACCOUNTS),
        person=rng.choice(PEOPLE),
        amount=rng.choice(AMOUNTS),
        day=rng.choice(DAYS),
        order=rng.choice(ORDERS),
        hello=rng.choice(HELLOS),
        whom=rng.choice(WHOM),
        card=rng.choice(CARDS),
        place=rng.choice(PLACES),
    )


# ---- instructions: short deterministic transformations ----------------------------------
WORDS = [
    "cat", "river", "yellow", "garden", "piano", "window", "rocket", "lemon", "forest", "candle",
    "tiger", "pencil", "castle", "orange", "silver", "bridge", "winter", "cloud", "apple",
    "mountain",
]
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Portugal": "Lisbon", "Japan": "Tokyo", "Egypt": "Cairo", "Canada": "Ottawa",
    "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo", "Greece": "Athens", "Poland": "Warsaw",
    "Austria": "Vienna", "Ireland": "Dublin", "Cuba": "Havana", "Chile": "Santiago",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Hungary": "Budapest",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "day": "night", "happy": "sad",
    "open": "closed", "light": "dark", "early": "late", "full": "empty", "old": "new", "wet": "dry",
    "loud": "quiet", "hard": "soft", "rich": "poor", "left": "right", "win": "lose", "begin": "end",
    "push": "pull", "inside": "outside",
}


def _instructions(rng: random.Random) -> list[dict]:
    pairs = []
    for word in WORDS:
        pairs.append({"instruction": f"Uppercase: {word}", "response": word.upper()})
    for _ in range(20):
        words = rng.sample(WORDS, rng.randint(3, 5))
        pairs.append(
            {
                "instruction": f"Reverse the words: {' '.join(words)}",
                "response": " ".join(reversed(words)),
            }
        )
    for country, capital in CAPITALS.items():
        pairs.append({"instruction": f"What is the capital of {country}?", "response": capital})
    for word, opposite in OPPOSITES.items():
        pairs.append({"instruction": f"Opposite of: {word}", "response": opposite})
    for word in rng.sample(WORDS, 20):
        pairs.append({"instruction": f"Repeat twice: {word}", "response": f"{word} {word}"})
    rng.shuffle(pairs)
    return pairs


# ---- writing --------------------------------------------------------------------------------
def _unique(rng: random.Random, make, label: str, count: int) -> list[str]:
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(make(rng, label))
    return list(seen)


def _labelled_split(rng, make, labels, n_train, n_eval) -> tuple[list, list]:
    """Unique texts per label, cut into disjoint train and eval rows, shuffled."""
    train, evaluation = [], []
    for label in labels:
        texts = _unique(rng, make, label, n_train + n_eval)
        train += [(t, label) for t in texts[:n_train]]
        evaluation += [(t, label) for t in texts[n_train:]]
    rng.shuffle(train)
    rng.shuffle(evaluation)
    return train, evaluation


def _csv(rows: list[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buffer.getvalue()


def render_samples() -> dict[str, str]:
    """File name -> file content of every sample dataset."""
    rng = random.Random(SEED)
    sentiment = _labelled_split(rng, _review, ["positive", "negative"], 150, 50)
    intents = _labelled_split(rng, _utterance, sorted(INTENTS), 50, 17)
    instructions = _instructions(rng)
    return {
        "sentiment_train.csv": _csv(sentiment[0]),
        "sentiment_eval.csv": _csv(sentiment[1]),
        "intent_train.csv": _csv(intents[0]),
        "intent_eval.csv": _csv(intents[1]),
        "instructions.jsonl": "".join(json.dumps(p) + "\n" for p in instructions),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, content in render_samples().items():
        (out / name).write_text(content, encoding="utf-8", newline="")
        print(f"wrote {out / name} ({content.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
