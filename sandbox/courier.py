"""An in-memory courier (:class:`shared.targets.auth0.welcome.Courier`): what would be mailed to a
person, kept for the test or the demo to read. A message delivered twice under one key is kept
twice: a test that expects one message sees the duplicate."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import TransientError


@dataclass(frozen=True)
class Letter:
    key: str
    to: str
    subject: str
    text: str


@dataclass
class MemoryCourier:
    letters: list[Letter] = field(default_factory=list)
    fail_with: TransientError | None = None  # a mail service that is down

    async def deliver(self, key: str, to: str, subject: str, text: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.letters.append(Letter(key, to, subject, text))

    def to(self, address: str) -> list[Letter]:
        return [letter for letter in self.letters if letter.to == address.lower()]
