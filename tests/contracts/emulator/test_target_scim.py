"""The ``scim:crm`` target (ScimTarget over scim2-client, built by its kind) against scim2-server
on loopback, against the Target contract: in the server's full profile, in the Entra SCIM API's
PATCH-only one, and in one without PATCH (whole resources replaced with ``If-Match``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from sandbox.scim import ENTRA, FULL, PUT_ONLY, ScimApp
from shared.bootstrap import BuildContext
from shared.clock import SYSTEM
from shared.settings import Settings
from shared.targets.scim.kind import SCIM
from tests.contracts.backends import Opener, close_all
from tests.contracts.target_contract import TargetContract, Vendor, sections
from tests.support import sandbox_env


@pytest.fixture(scope="module")
def scim_app() -> Iterator[ScimApp]:
    app = ScimApp().start()
    try:
        yield app
    finally:
        app.stop()


class TestScimTarget(TargetContract):
    profile = FULL  # what the server accepts (sandbox/scim.py)

    @pytest.fixture
    def vendor(self, scim_app: ScimApp) -> Opener[Vendor]:
        @asynccontextmanager
        async def on_scim_server() -> AsyncIterator[Vendor]:
            scim_app.reset()
            scim_app.set_profile(self.profile)
            section = sections(scim_app.base_url)["scim:crm"]
            env = sandbox_env(storage="UseDevelopmentStorage=true") | {"SCIM_CRM_TOKEN": scim_app.token}
            context = BuildContext(Settings.from_env(env), SYSTEM)

            def by_hand(email: str) -> str:
                return str(scim_app.add_user(email, displayName="made by hand")["id"])

            try:
                yield Vendor(SCIM.build(section, context), section, by_hand, unique="userName", name="displayName")
            finally:
                await close_all(context.closers)

        return on_scim_server


class TestScimTargetOnEntraProfile(TestScimTarget):
    profile = ENTRA


class TestScimTargetOnPutOnlyServer(TestScimTarget):
    profile = PUT_ONLY
