"""The product's Alerts over its router and Notifier (claims in Table Storage on Azurite) posting to the
sandbox's webhook receiver on loopback, against the Alerts contract. A webhook that is down is a
fault rule on the receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from sandbox.azurite import Azurite
from sandbox.receiver import WebhookReceiver
from sandbox.server import FaultRule
from shared.alerting.channels import LEGACY, WebhookSender
from shared.alerting.router import AlertRouter
from shared.services.alerts import Alerts as NotifiedAlerts
from shared.services.notify import Notifier
from shared.settings import Secret
from shared.stores.audit import AuditStore as TableAuditStore
from tests.contracts.alerts_contract import AlertsContract, Opener, Operators
from tests.contracts.backends import fresh_table

pytestmark = pytest.mark.azurite


class TestNotifiedAlerts(AlertsContract):
    @pytest.fixture
    def operators(self, azurite: Azurite, receiver: WebhookReceiver) -> Opener:
        @asynccontextmanager
        async def on_azurite(configured: bool = True) -> AsyncIterator[Operators]:
            async with fresh_table(azurite) as table:
                url = Secret(receiver.url()) if configured else None
                notifier = Notifier(table, url)
                # What the app builds without an alerts: section: NOTIFY_WEBHOOK_URL as the default route.
                legacy = WebhookSender(LEGACY, "text", url, notifier.http) if url is not None else None
                router = AlertRouter(notifier, None, {}, legacy=legacy)
                audit = TableAuditStore(table)

                def down() -> None:
                    receiver.faults.configure([FaultRule("webhook.post", kind="error", status=500)])

                def up() -> None:
                    receiver.faults.configure([])

                try:
                    yield Operators(NotifiedAlerts(router, audit), audit, receiver.texts, down, up)
                finally:
                    await notifier.close()

        return on_azurite
