"""Names in parts: what a one-string display name means, and how a name reads back."""

from __future__ import annotations

import pytest

from radservice.users.names import PersonName, parse_display_name


@pytest.mark.parametrize(("text", "expected"), [
    ("Smith, John", PersonName(family="Smith", given="John")),
    ("John Smith, MD", PersonName(family="Smith", given="John", degree="MD")),
    ("John Smith MD", PersonName(family="Smith", given="John", degree="MD")),
    ("Dr. Grace Hopper", PersonName(family="Hopper", given="Grace", prefix="Dr.")),
    ("Dr. Grace B Hopper Jr., PhD", PersonName(family="Hopper", given="Grace", middle="B", prefix="Dr.",
                                               suffix="Jr.", degree="PhD")),
    ("Smith, Dr. John A", PersonName(family="Smith", given="John", middle="A", prefix="Dr.")),
    ("Anna-Lena van der Berg", PersonName(family="van der Berg", given="Anna-Lena")),
    ("Hopper", PersonName(family="Hopper")),
    ("Anh Do", PersonName(family="Do", given="Anh")),  # a surname, not the degree DO
    ("Li Ma", PersonName(family="Ma", given="Li")),
    ("Martin Luther King, Jr.", PersonName(family="King", given="Martin", middle="Luther", suffix="Jr.")),
    ("John Smith, Jr., MD", PersonName(family="Smith", given="John", suffix="Jr.", degree="MD")),
    ("", PersonName(family="dr.user")),
])
def test_display_names_are_read_the_way_people_write_them(text: str, expected: PersonName) -> None:
    assert parse_display_name(text, "dr.user") == expected


def test_parts_round_trip_and_display() -> None:
    name = PersonName(family="Hopper", given="Grace", middle="B", prefix="Dr.", degree="PhD")
    assert PersonName.from_dict(name.as_dict()) == name
    assert name.display() == "Dr. Grace B Hopper, PhD"
