"""Small, deterministic sample data for the three workloads: the same day and seed always give
the same rows, so demos, tests and screenshots agree.

A data team copying a workload replaces these generators with reads of its own tables; the
shapes (one row per product, per ticket, per eval question) are what the workloads rely on.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from importlib import resources
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv


@dataclass(frozen=True)
class Category:
    """A catalog category: what it sells, what it is made of, its typical size and weight."""

    items: tuple[str, ...]
    materials: tuple[str, ...]
    features: tuple[str, ...]
    size_cm: tuple[int, int]
    weight_kg: tuple[float, float]


CATEGORIES: dict[str, Category] = {
    "kitchen": Category(
        ("kettle", "blender", "toaster", "storage jar set", "chef's knife", "coffee grinder"),
        ("stainless steel", "glass", "bamboo", "ceramic"),
        (
            "boils 1.7 litres in under 4 minutes",
            "switches itself off when empty",
            "dishwasher-safe removable parts",
            "non-slip rubber feet",
            "cool-touch handle",
            "1.2 litre capacity",
        ),
        (12, 40),
        (0.3, 3.5),
    ),
    "furniture": Category(
        ("desk", "armchair", "bookcase", "side table", "two-seat sofa", "bench"),
        ("solid oak", "powder-coated steel", "walnut veneer", "recycled polyester"),
        (
            "holds up to 120 kg",
            "adjustable levelling feet",
            "cable opening at the back",
            "removable, washable cover",
            "tool-free assembly in 15 minutes",
            "five adjustable shelves",
        ),
        (40, 200),
        (4.0, 45.0),
    ),
    "lighting": Category(
        ("floor lamp", "desk lamp", "pendant light", "wall light"),
        ("brushed aluminium", "glass", "linen", "powder-coated steel"),
        (
            "E27 bulb fitting",
            "dimmable with a compatible bulb",
            "adjustable arm and head",
            "2 metre fabric cable",
            "warm, glare-free light",
        ),
        (20, 160),
        (0.8, 6.0),
    ),
    "bedding": Category(
        ("duvet cover set", "pillow", "wool blanket", "mattress topper", "fitted sheet"),
        ("organic cotton", "linen", "merino wool", "recycled polyester"),
        (
            "double size, 200 x 200 cm",
            "hidden button closure",
            "breathable weave",
            "machine washable at 60 °C",
            "pre-washed for softness",
        ),
        (40, 200),
        (0.4, 4.0),
    ),
    "outdoor": Category(
        ("daypack", "two-person tent", "camping chair", "rain jacket", "insulated bottle"),
        ("ripstop nylon", "stainless steel", "recycled polyester", "aluminium"),
        (
            "keeps drinks cold for 24 hours",
            "taped seams keep rain out",
            "packs into its own pocket",
            "reflective details",
            "holds 20 litres",
        ),
        (20, 210),
        (0.3, 3.2),
    ),
    "storage": Category(
        ("storage box", "shelving unit", "laundry basket", "shoe rack"),
        ("bamboo", "powder-coated steel", "recycled polypropylene", "seagrass"),
        (
            "stacks three high",
            "holds up to 12 pairs of shoes",
            "lid with ventilation slots",
            "fits under most beds",
            "carry handles on both sides",
        ),
        (25, 180),
        (0.6, 12.0),
    ),
    "electronics": Category(
        ("wireless speaker", "over-ear headphones", "desk charger", "smart plug"),
        ("recycled ABS plastic", "brushed aluminium", "fabric-covered plastic"),
        (
            "20 hours of battery life",
            "charges over USB-C in 2 hours",
            "charges three devices at once",
            "pairs with two phones at once",
            "splash resistant",
        ),
        (5, 30),
        (0.1, 1.2),
    ),
}

MATERIALS_CARE: dict[str, str] = {
    "stainless steel": "wipe with a damp cloth and dry; avoid abrasive pads and bleach",
    "glass": "wash in warm soapy water or the dishwasher; avoid sudden temperature changes",
    "bamboo": "wipe clean and dry at once; oil twice a year; never soak",
    "ceramic": "dishwasher safe; do not use on a hob or under a grill",
    "solid oak": "dust with a dry cloth; treat with furniture oil once a year",
    "powder-coated steel": "wipe with a damp cloth; touch up chips to keep rust away",
    "walnut veneer": "dust with a dry cloth; keep out of direct sun and away from radiators",
    "recycled polyester": "machine wash at 30 °C; line dry; do not iron",
    "brushed aluminium": "wipe with a soft dry cloth; no solvents",
    "linen": "machine wash at 40 °C; iron while damp; softens with every wash",
    "organic cotton": "machine wash at 60 °C; tumble dry low",
    "merino wool": "hand wash cold or wool cycle; dry flat",
    "ripstop nylon": "sponge clean; air dry before storing; re-proof yearly",
    "aluminium": "rinse after use in salt water; dry before storing",
    "recycled polypropylene": "wash with warm soapy water; dishwasher safe on the top rack",
    "seagrass": "vacuum or brush; keep dry to avoid mould",
    "recycled ABS plastic": "wipe with a dry cloth; keep ports free of dust",
    "fabric-covered plastic": "brush the fabric gently; do not wash",
}

COLOURS = (
    "chalk white",
    "charcoal",
    "sage green",
    "terracotta",
    "natural",
    "midnight blue",
    "sand",
    "ochre",
)
SERIES = ("Fjord", "Harbour", "Linden", "Moor", "Alder", "Tide", "Birch", "Cove", "Heath")

PRODUCTS_SCHEMA = pa.schema(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("material", pa.string(), nullable=False),
        pa.field("colour", pa.string(), nullable=False),
        pa.field("width_cm", pa.int32(), nullable=False),
        pa.field("height_cm", pa.int32(), nullable=False),
        pa.field("depth_cm", pa.int32(), nullable=False),
        pa.field("weight_kg", pa.float64(), nullable=False),
        pa.field("features", pa.string(), nullable=False),  # "; "-separated
        pa.field("list_price_eur", pa.float64(), nullable=False),
    ]
)


def _rng(*parts: object) -> random.Random:
    # A stable seed from the parts (``hash()`` of a str changes between processes).
    return random.Random(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest())


def _product(rng: random.Random) -> dict[str, Any]:
    name = rng.choice(sorted(CATEGORIES))
    category = CATEGORIES[name]
    item = rng.choice(category.items)
    low, high = category.size_cm
    return {
        "product_id": f"NW{rng.randrange(16**8):08X}",
        "title": f"{rng.choice(SERIES)} {item}",
        "category": name,
        "material": rng.choice(category.materials),
        "colour": rng.choice(COLOURS),
        "width_cm": rng.randint(low, high),
        "height_cm": rng.randint(low, high),
        "depth_cm": rng.randint(max(3, low // 2), high),
        "weight_kg": round(rng.uniform(*category.weight_kg), 1),
        "features": "; ".join(rng.sample(category.features, k=3)),
        "list_price_eur": round(rng.uniform(9, 60) * (1 + category.weight_kg[1] / 10), 2),
    }


def generate_products(day: date | str, count: int, *, seed: int = 7) -> pa.Table:
    """The products added or changed on ``day``: ``count`` rows, unique ``product_id``."""
    rng = _rng("products", seed, str(day))
    rows: dict[str, dict[str, Any]] = {}
    while len(rows) < count:
        row = _product(rng)
        rows.setdefault(row["product_id"], row)
    return pa.Table.from_pylist(list(rows.values()), schema=PRODUCTS_SCHEMA)


def example_products(count: int) -> list[dict[str, Any]]:
    """Fixed products for few-shot examples in prompts (independent of any day)."""
    rng = _rng("example-products")
    return [_product(rng) for _ in range(count)]


# -- support tickets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """A kind of support ticket: its category and how customers tend to put it."""

    category: str
    openings: tuple[str, ...]


ISSUES: dict[str, Issue] = {
    "late delivery": Issue(
        "shipping",
        (
            "My order {order} was supposed to arrive {days} days ago. This late delivery is "
            "a problem because the {product} is a present.",
            "Still no sign of the {product} from order {order}. Tracking has not moved for "
            "{days} days; is there a late delivery on your side?",
        ),
    ),
    "damaged item": Issue(
        "shipping",
        (
            "The {product} from order {order} arrived as a damaged item: the box was crushed "
            "and one corner is cracked.",
            "I opened the parcel for order {order} today and the {product} is a damaged item, "
            "scratched all along one side.",
        ),
    ),
    "wrong item": Issue(
        "shipping",
        (
            "I ordered a {product} (order {order}) but you sent the wrong item, a completely "
            "different colour.",
        ),
    ),
    "missing parcel": Issue(
        "shipping",
        (
            "Tracking for order {order} says delivered {days} days ago but I have nothing. "
            "Please look into my missing parcel.",
        ),
    ),
    "refund delay": Issue(
        "billing",
        (
            "I returned the {product} from order {order} {days} days ago and I am still "
            "waiting. Why the refund delay?",
        ),
    ),
    "double charge": Issue(
        "billing",
        (
            "My bank statement shows a double charge for order {order}, the {product} was "
            "charged twice.",
        ),
    ),
    "invoice request": Issue(
        "billing",
        ("Invoice request: I need a VAT invoice for order {order} for my company accounts.",),
    ),
    "defective product": Issue(
        "product",
        (
            "The {product} stopped working after {days} days. I think it is a defective "
            "product. Order {order}.",
            "After {days} days of normal use the {product} makes a grinding noise; surely a "
            "defective product?",
        ),
    ),
    "sizing question": Issue(
        "product",
        ("Sizing question: will the {product} fit a space of 80 cm? Thinking of ordering.",),
    ),
    "missing parts": Issue(
        "product",
        (
            "The {product} from order {order} came with missing parts: two screws and the "
            "manual are not in the box.",
        ),
    ),
    "login problem": Issue(
        "account",
        (
            "I have a login problem: the site says my email is unknown, but I ordered the "
            "{product} with it last month.",
        ),
    ),
    "password reset": Issue(
        "account",
        ("The password reset email never arrives, I tried {days} times today.",),
    ),
    "praise": Issue(
        "other",
        ("Just wanted to say the {product} is lovely, and the courier was very kind. Praise!",),
    ),
}
ISSUE_WEIGHTS = {
    "late delivery": 14,
    "damaged item": 9,
    "wrong item": 5,
    "missing parcel": 4,
    "refund delay": 9,
    "double charge": 3,
    "invoice request": 4,
    "defective product": 8,
    "sizing question": 6,
    "missing parts": 4,
    "login problem": 4,
    "password reset": 5,
    "praise": 3,
}
TONES = {
    "negative": ("This is really frustrating.", "Very disappointed, honestly.", ""),
    "neutral": ("", "Thanks in advance."),
    "positive": ("Thanks for the quick help last time!", "Love your shop, by the way."),
}
PRODUCT_WORDS = tuple(item for c in CATEGORIES.values() for item in c.items)

TICKETS_SCHEMA = pa.schema(
    [
        pa.field("ticket_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("customer_tier", pa.string(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),
        pa.field("body", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class LabelledTicket:
    """A generated ticket and the labels its generator knows to be right."""

    row: dict[str, Any]
    issue: str
    category: str
    sentiment: str
    urgency: str


def _ticket(rng: random.Random, day: str, index: int) -> LabelledTicket:
    issue = rng.choices(list(ISSUE_WEIGHTS), weights=list(ISSUE_WEIGHTS.values()))[0]
    kind = ISSUES[issue]
    sentiment = "positive" if issue == "praise" else rng.choice(["negative", "negative", "neutral"])
    product = rng.choice(PRODUCT_WORDS)
    order = f"NW-{rng.randrange(10**8):08d}"
    body = rng.choice(kind.openings).format(product=product, order=order, days=rng.randint(2, 12))
    urgent = rng.random() < 0.15
    if urgent:
        body += " I need this sorted before the weekend."
    body = f"{body} {rng.choice(TONES[sentiment])}".strip()
    channel = rng.choice(["email", "web", "chat"])
    if channel == "web":
        # The web form asks for a topic; customers do not always pick the right one.
        topic = kind.category if rng.random() < 0.8 else rng.choice(["billing", "other"])
        body = f"Topic: {topic}. {body}"
    start = datetime.combine(date.fromisoformat(day), time(0), tzinfo=UTC)
    row = {
        "ticket_id": f"TCK-{day.replace('-', '')}-{index:05d}",
        "created_at": start + timedelta(seconds=rng.randrange(86_400)),
        "channel": channel,
        "customer_tier": rng.choice(["standard", "standard", "standard", "plus"]),
        "subject": f"{issue.capitalize()} ({product})",
        "body": body,
    }
    urgency = "high" if urgent or issue == "double charge" else rng.choice(["low", "medium"])
    return LabelledTicket(row, issue, kind.category, sentiment, urgency)


def generate_tickets(day: date | str, count: int, *, seed: int = 7) -> pa.Table:
    """The support tickets that arrived on ``day``."""
    rng = _rng("tickets", seed, str(day))
    rows = [_ticket(rng, str(day), index).row for index in range(count)]
    return pa.Table.from_pylist(rows, schema=TICKETS_SCHEMA)


def example_tickets(count: int) -> list[LabelledTicket]:
    """Fixed, labelled tickets for few-shot examples in prompts."""
    rng = _rng("example-tickets")
    return [_ticket(rng, "2025-01-01", index) for index in range(count)]


# -- bundled files ------------------------------------------------------------------------------


def bundled_text(name: str) -> str:
    """A text file shipped in ``llm_pipelines/workloads/data``."""
    return resources.files("llm_pipelines.workloads").joinpath("data", name).read_text()


@cache
def eval_set() -> pa.Table:
    """The bundled evaluation set: question_id, topic, question, reference_answer."""
    with resources.as_file(
        resources.files("llm_pipelines.workloads").joinpath("data", "eval_set.csv")
    ) as path:
        return pacsv.read_csv(path)
