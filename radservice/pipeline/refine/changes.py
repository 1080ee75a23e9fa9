"""What a refinement step changed: the notes a radiologist sees next to the draft."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Change:
    """One change a rule made: the rule's name, the text before, the text after."""

    rule: str
    before: str
    after: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)
