"""Model the people behind generated sources, and the ways source systems disagree about them.

Entity resolution only has real work to do when the same person looks different from system to
system, so this module owns both halves: who the people are (:func:`make_people`) and how one
system's record of them drifts from the truth (nicknames, one-character typos, email case and
whitespace, phone formats). Everything draws from a caller-supplied :class:`random.Random`, and
Faker is called only while building :class:`Pools`, because it is slow per call and its global
state would break determinism.
"""

from __future__ import annotations

import dataclasses
import random
import string
from bisect import bisect
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate

from faker import Faker

__all__ = [
    "NICKNAMES",
    "Address",
    "Person",
    "Pools",
    "build_pools",
    "card_number",
    "format_phone",
    "iban",
    "make_people",
    "ticket_text",
    "typo",
    "vary_email",
    "vary_first_name",
    "vary_name",
    "weighted",
]

#: Formal first name -> the short forms people give instead. Small on purpose: enough for the
#: matcher to need a nickname table, not an attempt at a complete one.
NICKNAMES: dict[str, tuple[str, ...]] = {
    "Robert": ("Bob", "Rob", "Bobby"),
    "William": ("Bill", "Will", "Billy"),
    "Elizabeth": ("Liz", "Beth", "Betty"),
    "Richard": ("Rick", "Dick", "Rich"),
    "James": ("Jim", "Jimmy"),
    "Michael": ("Mike", "Mikey"),
    "Jennifer": ("Jen", "Jenny"),
    "Katherine": ("Kate", "Kathy"),
    "Catherine": ("Cathy", "Kate"),
    "Christopher": ("Chris",),
    "Christina": ("Tina", "Chris"),
    "Daniel": ("Dan", "Danny"),
    "Joseph": ("Joe", "Joey"),
    "Thomas": ("Tom", "Tommy"),
    "Margaret": ("Maggie", "Peggy"),
    "Patricia": ("Pat", "Patty", "Trish"),
    "Anthony": ("Tony",),
    "Matthew": ("Matt",),
    "Nicholas": ("Nick",),
    "Samantha": ("Sam",),
    "Jonathan": ("Jon",),
    "Rebecca": ("Becky",),
    "Benjamin": ("Ben",),
    "Alexander": ("Alex",),
    "Andrew": ("Andy", "Drew"),
    "Edward": ("Ed", "Eddie", "Ted"),
    "Steven": ("Steve",),
    "Stephen": ("Steve",),
    "David": ("Dave",),
    "Jessica": ("Jess",),
    "Kimberly": ("Kim",),
    "Susan": ("Sue",),
    "Charles": ("Charlie", "Chuck"),
    "Joshua": ("Josh",),
    "Timothy": ("Tim",),
    "Gregory": ("Greg",),
    "Kenneth": ("Ken", "Kenny"),
    "Ronald": ("Ron",),
    "Donald": ("Don",),
    "Lawrence": ("Larry",),
    "Victoria": ("Vicky", "Tori"),
    "Deborah": ("Debbie", "Deb"),
    "Zachary": ("Zach",),
    "Jacob": ("Jake",),
    "Samuel": ("Sam",),
    "Abigail": ("Abby",),
    "Jeffrey": ("Jeff",),
    "Gerald": ("Jerry",),
}

SYSTEMS_WITH_PEOPLE = ("crm", "billing", "support")

# Real US area codes, so formatted numbers look like the ones the matcher will meet. Kept as
# text: a tuple literal of forty codes would be formatted one per line.
_AREA_CODE_TEXT = (
    "201 202 206 212 213 214 215 303 305 310 312 313 404 408 412 415 469 503 510 512 602 "
    "614 617 646 702 713 718 773 804 818 832 858 901 917 919 925 949 971 972 980"
)
_AREA_CODES = tuple(_AREA_CODE_TEXT.split())
_PHONE_FORMATS = (
    "({a}) {e}-{l}",
    "+1{a}{e}{l}",
    "+1 {a} {e} {l}",
    "{a}.{e}.{l}",
    "{a}{e}{l}",
    "{a}-{e}-{l}",
    "1-{a}-{e}-{l}",
    "+1 ({a}) {e}-{l}",
)
_ISSUES = (
    ("Order #{order} has not arrived", "My order #{order} still hasn't arrived."),
    ("Where is my order?", "Tracking for order #{order} has not moved for a week."),
    ("Refund for returned item", "I sent order #{order} back and I'm still waiting for a refund."),
    ("Charged twice", "I was charged twice, both on the card ending in {last4}."),
    ("Payment declined", "My card ending {last4} was declined but the bank says it is fine."),
    ("Cannot log in", "I can't log into my account, the reset email never arrives."),
    ("Update my phone number", "Please update the phone number on my account."),
    ("Change of address", "I moved recently, please update my shipping address."),
    ("Wrong item received", "Order #{order} contained the wrong item."),
    ("Damaged package", "The package for order #{order} arrived damaged."),
    ("Question about my invoice", "I don't understand one line on my latest invoice."),
    ("Please close my account", "I would like to close my account and delete my data."),
    ("Discount code not working", "The discount code from your newsletter is rejected."),
)
_PHONE_LINES = ("You can reach me at {}.", "Call me on {} please.", "My number: {}")
_SIGNOFFS = ("Thanks,\n{n}", "Regards,\n{n}", "-- {n}", "Thank you!\n{n}", "Best, {n}")
_FREE_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com")
_FREE_DOMAIN_WEIGHTS = tuple(accumulate((40, 14, 10, 9, 8, 3)))
_CARD_PREFIXES = ("4", "4", "4", "51", "52", "53", "54", "55", "6011")
# Letters next to each one on a QWERTY keyboard, for the typos people actually make.
_NEIGHBOUR_TEXT = "sq vn xv sf wr dg fh gj uo hk jl ko kn bm ip ol wa et ad ry yi cb qe zc tu xa"
_KEYBOARD_NEIGHBOURS = dict(zip(string.ascii_lowercase, _NEIGHBOUR_TEXT.split(), strict=True))


@dataclass(frozen=True, slots=True)
class Address:
    """A postal address as the CRM stores it (street, city and ZIP, US only)."""

    street: str
    city: str
    zip: str


@dataclass(frozen=True, slots=True)
class Pools:
    """Values drawn from Faker once, then sampled with a seeded Random for every record."""

    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    street_names: tuple[str, ...]
    places: tuple[tuple[str, str], ...]
    company_domains: tuple[str, ...]
    sentences: tuple[str, ...]

    def address(self, rng: random.Random) -> Address:
        """Draw a random address: a pooled street and place, a fresh house number."""
        # House numbers come from rng rather than the pool, so unrelated people rarely share
        # a street address, as in real data.
        street = f"{rng.randrange(1, 10 ** rng.randint(3, 5))} {rng.choice(self.street_names)}"
        if rng.random() < 0.25:
            street += f" {rng.choice(('Apt.', 'Suite'))} {rng.randrange(100, 1000)}"
        city, zip_code = rng.choice(self.places)
        return Address(street, city, zip_code)


@dataclass(frozen=True, slots=True)
class Person:
    """The truth about one person, before any system records (and distorts) it.

    ``alt_email`` is a second address the person gives in exactly one system
    (``alt_email_system``), so that email alone cannot link every record. ``family_of`` is the
    person id whose email this person shares, if any.
    """

    person_id: int
    first_name: str
    last_name: str
    email: str
    phone: str
    birth_date: date
    address: Address
    systems: frozenset[str]
    alt_email: str | None = None
    alt_email_system: str | None = None
    family_of: int | None = None

    def email_in(self, system: str) -> str:
        """Return the email this person gives to ``system``."""
        if self.alt_email is not None and self.alt_email_system == system:
            return self.alt_email
        return self.email


def build_pools(seed: int) -> Pools:
    """Draw every Faker-made value up front from a Faker seeded with ``seed``.

    A thousand or two values per field keep the data realistic (repeated surnames and cities
    are normal) at a fixed cost, whatever the number of people (benchmarks/README.md,
    "Demo sources").
    """
    fake = Faker("en_US")
    fake.seed_instance(seed)

    def unique(make: str, count: int) -> tuple[str, ...]:
        return tuple(dict.fromkeys(str(getattr(fake, make)()) for _ in range(count)))

    def draws(make: str, count: int) -> tuple[str, ...]:
        # Repeats kept on purpose: Faker weights names by real frequency, so a pool with
        # duplicates makes "James Smith" common and rare names rare, as in real customer data.
        return tuple(str(getattr(fake, make)()) for _ in range(count))

    return Pools(
        first_names=draws("first_name", 2000),
        last_names=draws("last_name", 2000),
        street_names=unique("street_name", 1000),
        places=tuple((str(fake.city()), str(fake.zipcode())) for _ in range(1500)),
        company_domains=unique("domain_name", 400),
        sentences=unique("sentence", 600),
    )


def weighted(rng: random.Random, values: tuple[str, ...], cum_weights: tuple[int, ...]) -> str:
    """Pick one of ``values`` with the given cumulative weights (cheaper than rng.choices)."""
    return values[bisect(cum_weights, rng.random() * cum_weights[-1])]


def make_people(count: int, rng: random.Random, pools: Pools, anchor: date) -> list[Person]:
    """Create ``count`` people: names, contacts, which systems know them, families.

    About 90% are in the CRM, 70% have a billing account and 40% have written to support,
    independently, so every combination occurs, including people known to one system only.
    """
    used_emails: set[str] = set()
    used_phones: set[str] = set()
    households: set[int] = set()  # people whose email a relative already shares
    people: list[Person] = []
    for person_id in range(1, count + 1):
        systems = {
            system
            for system, share in zip(SYSTEMS_WITH_PEOPLE, (0.9, 0.7, 0.4), strict=True)
            if rng.random() < share
        }
        if not systems:
            systems.add(rng.choice(("crm", "support")))
        first, last = rng.choice(pools.first_names), rng.choice(pools.last_names)
        birth = anchor - timedelta(days=rng.randrange(18 * 365, 80 * 365))
        address = pools.address(rng)
        family_of = None
        head = people[rng.randrange(len(people))] if people and rng.random() < 0.03 else None
        if head is not None and head.family_of is None and head.first_name != first:
            # A relative: same household and surname, and the household's one email address.
            last, address, family_of = head.last_name, head.address, head.person_id
            if head.person_id not in households and rng.random() < 0.5:
                shared = _unique_email(rng, _family_local(rng, last), None, used_emails)
                people[head.person_id - 1] = dataclasses.replace(head, email=shared)
            email = people[head.person_id - 1].email
            households.add(head.person_id)
        else:
            local = _personal_local(rng, first, last, birth)
            email = _unique_email(rng, local, None, used_emails)
        alt_email = alt_system = None
        if rng.random() < 0.12:
            local = _personal_local(rng, first, last, birth)
            domain = rng.choice(pools.company_domains) if rng.random() < 0.5 else None
            alt_email = _unique_email(rng, local, domain, used_emails)
            alt_system = rng.choice(sorted(systems))
        people.append(
            Person(
                person_id=person_id,
                first_name=first,
                last_name=last,
                email=email,
                phone=_unique_phone(rng, used_phones),
                birth_date=birth,
                address=address,
                systems=frozenset(systems),
                alt_email=alt_email,
                alt_email_system=alt_system,
                family_of=family_of,
            )
        )
    return people


def _ascii(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch in string.ascii_lowercase)


def _personal_local(rng: random.Random, first: str, last: str, birth: date) -> str:
    """Pick an email local part the way people do: from the name, maybe a year or number."""
    f, l = _ascii(first), _ascii(last)  # noqa: E741
    patterns = (
        f"{f}.{l}",
        f"{f}{l}",
        f"{f[:1]}{l}",
        f"{f}_{l}",
        f"{l}.{f}",
        f"{f}.{l}{birth.year % 100:02d}",
        f"{f}{rng.randrange(1, 100)}",
        f"{f[:1]}.{l}",
    )
    return rng.choice(patterns)


def _family_local(rng: random.Random, last: str) -> str:
    """Pick a household email local part, such as ``thesmiths``."""
    l = _ascii(last)  # noqa: E741
    return rng.choice((f"the{l}s", f"{l}family", f"{l}.home", f"{l}household"))


def _unique_email(rng: random.Random, local: str, domain: str | None, used: set[str]) -> str:
    """Return ``local@domain`` (a weighted free-mail domain if None), numbered if taken."""
    if domain is None:
        domain = weighted(rng, _FREE_DOMAINS, _FREE_DOMAIN_WEIGHTS)
    email, suffix = f"{local}@{domain}", 1
    while email in used:
        suffix += 1
        email = f"{local}{suffix}@{domain}"
    used.add(email)
    return email


def _unique_phone(rng: random.Random, used: set[str]) -> str:
    """Return a ten-digit US number nobody else has (digits only; formatting is per system)."""
    while True:
        number = f"{rng.choice(_AREA_CODES)}{rng.randrange(200, 1000)}{rng.randrange(10000):04d}"
        if number not in used:
            used.add(number)
            return number


def format_phone(rng: random.Random, digits: str, preferred: int, p_other: float) -> str:
    """Format ten ``digits`` in style ``preferred`` (an index), or any style with ``p_other``."""
    style = _PHONE_FORMATS[preferred]
    if rng.random() < p_other:
        style = rng.choice(_PHONE_FORMATS)
    return style.format(a=digits[:3], e=digits[3:6], l=digits[6:])


def vary_email(rng: random.Random, email: str) -> str:
    """Return ``email`` as a careless system stores it: other case, stray whitespace, or both."""
    local, _, domain = email.partition("@")
    variants = (
        email.upper(),
        f"{local.capitalize()}@{domain}",
        f"{local.title()}@{domain.capitalize()}",
        f" {email}",
        f"{email} ",
        f"  {local.capitalize()}@{domain} ",
    )
    return rng.choice(variants)


def typo(rng: random.Random, word: str) -> str:
    """Apply one random one-character edit (swap, drop, double, neighbour key) to ``word``."""
    if len(word) < 3:
        return word
    i = rng.randrange(1, len(word) - 1)  # keep the first letter: people rarely get that wrong
    kind = rng.randrange(4)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    near = _KEYBOARD_NEIGHBOURS.get(word[i].lower())
    if near is None:
        return word[:i] + word[i + 1 :]
    return word[:i] + rng.choice(near) + word[i + 1 :]


def vary_first_name(rng: random.Random, name: str, p_nickname: float, p_typo: float) -> str:
    """Return ``name``, a nickname of it (with ``p_nickname``) or a typo of it (``p_typo``)."""
    roll = rng.random()
    short = NICKNAMES.get(name)
    if short is not None and roll < p_nickname:
        return rng.choice(short)
    if roll > 1.0 - p_typo:
        return typo(rng, name)
    return name


def vary_name(rng: random.Random, person: Person, p_nickname: float) -> tuple[str, str]:
    """Return (first, last) as one record spells them: nickname or typo in either, rarely."""
    first = vary_first_name(rng, person.first_name, p_nickname, 0.04)
    last = typo(rng, person.last_name) if rng.random() < 0.03 else person.last_name
    return first, last


def ticket_text(
    rng: random.Random, person: Person, pools: Pools, order: int, card: str
) -> tuple[str, str]:
    """Write a support ticket's subject and body about ``order`` or ``card``.

    The body always names the person (maybe by nickname, maybe misspelt) and sometimes gives
    their email, a phone number in any format, or the full card number: the free-text PII that
    masking rules must find.
    """
    first, last = vary_name(rng, person, 0.25)
    name = f"{first} {last}"
    subject, issue = rng.choice(_ISSUES)
    parts = [rng.choice(("Hi,", "Hello,", "Hi there,", "Dear support,", ""))]
    if rng.random() < 0.5:
        parts.append(f"My name is {name}.")
    parts.append(issue.format(order=order, last4=card[-4:]))
    if rng.random() < 0.3:
        parts.append(rng.choice(pools.sentences))
    if rng.random() < 0.5:
        phone = format_phone(rng, person.phone, rng.randrange(len(_PHONE_FORMATS)), 0.0)
        parts.append(rng.choice(_PHONE_LINES).format(phone))
    if rng.random() < 0.3:
        parts.append(f"My email is {person.email}.")
    if rng.random() < 0.06:
        groups = [card[i : i + 4] for i in range(0, 16, 4)]
        shown = rng.choice((card, " ".join(groups), "-".join(groups)))
        parts.append(f"The card I used is {shown}.")
    parts.append(rng.choice(_SIGNOFFS).format(n=name))
    return subject.format(order=order), rng.choice(("\n\n", "\n", " ")).join(filter(None, parts))


def card_number(rng: random.Random) -> str:
    """Return a 16-digit card number (Visa, Mastercard or Discover prefix) with a Luhn digit."""
    prefix = rng.choice(_CARD_PREFIXES)
    body = prefix + "".join(rng.choice(string.digits) for _ in range(15 - len(prefix)))
    total = 0
    # Walking right to left from the position just before the check digit, every first,
    # third, ... digit is doubled.
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return body + str((10 - total % 10) % 10)


def iban(rng: random.Random) -> str:
    """Return a random IBAN (German, British or Dutch layout) with valid ISO 13616 checksum."""
    country = rng.choice(("DE", "GB", "NL"))
    letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
    digit_count = {"DE": 18, "GB": 14, "NL": 10}[country]
    digits = "".join(rng.choice(string.digits) for _ in range(digit_count))
    bban = digits if country == "DE" else letters + digits
    numeric = "".join(str(int(ch, 36)) for ch in f"{bban}{country}00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"
