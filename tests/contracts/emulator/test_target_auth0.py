"""The ``auth0`` target (Auth0Target over auth0-python, built by its kind) against the sandbox's
Auth0 emulator on loopback, against the Target contract. Pages hold two accounts, so its paging is
followed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from sandbox.auth0 import Auth0Emulator
from shared.bootstrap import BuildContext
from shared.clock import SYSTEM
from shared.settings import Settings
from shared.targets.auth0 import target as auth0_target
from shared.targets.auth0.kind import AUTH0
from tests.contracts.backends import Opener, close_all
from tests.contracts.target_contract import TargetContract, Vendor, sections
from tests.support import sandbox_env


@pytest.fixture(scope="module")
def auth0() -> Iterator[Auth0Emulator]:
    emulator = Auth0Emulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


class TestAuth0Target(TargetContract):
    @pytest.fixture
    def vendor(self, auth0: Auth0Emulator, monkeypatch: pytest.MonkeyPatch) -> Opener[Vendor]:
        monkeypatch.setattr(auth0_target, "PAGE", 2)  # a few accounts are then several pages

        @asynccontextmanager
        async def on_emulator() -> AsyncIterator[Vendor]:
            auth0.reset()
            section = sections()["auth0"]
            for role in sorted(section.managed):
                auth0.add_role(role)
            env = sandbox_env(storage="UseDevelopmentStorage=true", auth0_base_url=auth0.base_url)
            context = BuildContext(Settings.from_env(env), SYSTEM)

            def by_hand(email: str) -> str:
                return str(auth0.add_user({"email": email, "name": "made by hand"})["user_id"])

            try:
                yield Vendor(AUTH0.build(section, context), section, by_hand)
            finally:
                await close_all(context.closers)

        return on_emulator
