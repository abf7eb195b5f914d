"""Leases: one writer per identity, renewed while it works and fenced before every write."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables.aio import TableClient

from shared.clock import SYSTEM, Clock
from shared.errors import LeaseBusy, LeaseLost
from shared.stores.keys import decode_key, encode_key, replace_if_unchanged

LEASE_TTL_S: Final = 60.0


LEASE_RENEW_EVERY_S: Final = 15.0  # a quarter of the lifetime: three renewals may fail before it lapses


# A target write starts only while at least this much of the lease is left. It exceeds the longest
# a target request may take (the clients' timeouts are shorter), so a write that starts fenced
# ends before the lease could pass to another worker.
LEASE_FENCE_MARGIN_S: Final = 25.0


log = logging.getLogger("entra_sync.storage")


@dataclass
class Lease:
    key: str
    owner: str
    etag: str
    expires_at: float  # epoch seconds, as written to the entity
    lost: bool = False  # a renewal found that another worker had taken it over


class LeaseKeeping:
    """What a lease store does with the leases it takes, whatever it keeps them in: wait for one,
    hold it renewed in the background, fence writes with it, take several at once. A store
    provides ``try_acquire``, ``renew`` and ``release`` (and ``clock``, ``renew_every_s``,
    ``fence_margin_s``); the in-memory fake and the Table Storage store share this part."""

    clock: Clock
    renew_every_s: float
    fence_margin_s: float

    async def try_acquire(self, identity: str, owner: str | None = None) -> Lease | None:
        raise NotImplementedError

    async def renew(self, lease: Lease) -> None:
        raise NotImplementedError

    async def release(self, lease: Lease) -> None:
        raise NotImplementedError

    async def acquire(self, identity: str, wait_s: float = 3.0, poll_s: float = 0.05) -> Lease:
        """Wait up to ``wait_s`` for the lease, then raise :class:`LeaseBusy`."""
        deadline = time.monotonic() + wait_s
        while True:
            lease = await self.try_acquire(identity)
            if lease is not None:
                return lease
            if time.monotonic() >= deadline:
                raise LeaseBusy(f"identity {identity} is being synced by another worker", retry_after_s=5.0)
            await asyncio.sleep(poll_s)

    def fence(self, lease: Lease) -> None:
        """Before a target write: raise :class:`LeaseLost` unless the lease is surely still ours
        (no I/O: another worker may take it over only after ``expires_at``)."""
        if lease.lost or self.clock.now() > lease.expires_at - self.fence_margin_s:
            raise LeaseLost(
                f"lease {decode_key(lease.key)} lapsed before a write; the write was not sent", retry_after_s=5.0
            )

    def fence_after_write(self, lease: Lease) -> None:
        """After a target write: raise :class:`LeaseLost` (``after_write``) if the lease may have passed
        to another worker while the write was under way."""
        if lease.lost or self.clock.now() > lease.expires_at:
            raise LeaseLost(
                f"lease {decode_key(lease.key)} lapsed while a write was under way; converging again",
                retry_after_s=5.0,
                after_write=True,
            )

    async def _keep(self, lease: Lease) -> None:
        while not lease.lost:
            await self.clock.sleep(self.renew_every_s)
            try:
                await self.renew(lease)
            except LeaseLost:
                log.warning("lease %s was taken over; its writes are fenced off", decode_key(lease.key))
                return
            except Exception as exc:  # storage trouble: the fence stops writes if renewals keep failing
                log.warning("could not renew lease %s: %s", decode_key(lease.key), type(exc).__name__)

    @contextlib.asynccontextmanager
    async def held(self, identity: str, wait_s: float = 3.0) -> AsyncIterator[Lease]:
        """The lease for the duration of the block, renewed in the background, then released."""
        lease = await self.acquire(identity, wait_s=wait_s)
        keeper = asyncio.create_task(self._keep(lease), name=f"lease:{identity}")
        try:
            yield lease
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self.release(lease)

    @contextlib.asynccontextmanager
    async def many(
        self, keys: Mapping[str, str], wait_s: float = 3.0
    ) -> AsyncIterator[tuple[dict[str, Lease], dict[str, Exception]]]:
        """Several leases at once (name -> key), taken concurrently and each renewed while held:
        yields (the leases taken, by name; why the others could not be, by name), releases at the
        end. One busy key never keeps the others from being taken."""
        holds = {name: self.held(key, wait_s=wait_s) for name, key in keys.items()}
        entered = await asyncio.gather(*(h.__aenter__() for h in holds.values()), return_exceptions=True)
        taken: dict[str, Lease] = {}
        refused: dict[str, Exception] = {}
        for name, got in zip(holds, entered, strict=True):
            if isinstance(got, Exception):
                refused[name] = got
            elif isinstance(got, BaseException):
                raise got
            else:
                taken[name] = got
        try:
            yield taken, refused
        finally:
            for name in taken:
                await holds[name].__aexit__(None, None, None)


class LeaseStore(LeaseKeeping):
    """One writer per identity: an expiring lease entity, taken insert-only or by an ETag-guarded
    take-over once expired, so a crashed worker cannot wedge an identity for longer than the lease's
    time to live.

    A lease taken with :meth:`held` is renewed in the background while the work runs, and every
    target write is *fenced* (:meth:`fence`): a worker whose lease lapsed (it was paused, starved or
    its renewals failed) or was taken over writes nothing more. A write already on the wire when the
    lease lapsed cannot be recalled; :meth:`fence_after_write` tells the caller to converge the
    identity again from a fresh read, so the newest state still lands last.
    """

    def __init__(
        self,
        table: TableClient,
        ttl_s: float = LEASE_TTL_S,
        partition: str = "identity",
        *,
        clock: Clock = SYSTEM,
        renew_every_s: float = LEASE_RENEW_EVERY_S,
        fence_margin_s: float = LEASE_FENCE_MARGIN_S,
    ):
        self.table = table
        self.ttl_s = ttl_s
        self.partition = partition
        self.clock = clock
        self.renew_every_s = min(renew_every_s, ttl_s / 3)
        self.fence_margin_s = min(fence_margin_s, ttl_s / 2)

    def _entity(self, key: str, owner: str, expires_at: float) -> dict[str, Any]:
        return {"PartitionKey": self.partition, "RowKey": key, "owner": owner, "expires": expires_at}

    async def try_acquire(self, identity: str, owner: str | None = None) -> Lease | None:
        owner = owner or uuid.uuid4().hex
        key = encode_key(identity)
        expires_at = self.clock.now() + self.ttl_s
        entity = self._entity(key, owner, expires_at)
        try:
            meta = await self.table.create_entity(entity)
            return Lease(key, owner, str(meta["etag"]), expires_at)
        except ResourceExistsError:
            pass
        try:
            current = await self.table.get_entity(self.partition, key)
        except ResourceNotFoundError:
            return None  # released between our two calls: the caller tries again
        if float(current.get("expires", 0)) > self.clock.now():
            return None
        etag = await replace_if_unchanged(self.table, entity, current.metadata["etag"])
        if etag is None:
            return None  # another worker took it over first
        return Lease(key, owner, etag, expires_at)

    async def renew(self, lease: Lease) -> None:
        """Extend the lease; :class:`LeaseLost` when another worker took it over meanwhile."""
        if lease.lost:
            raise LeaseLost(f"lease {decode_key(lease.key)} was taken over by another worker", 5.0)
        expires_at = self.clock.now() + self.ttl_s
        etag = await replace_if_unchanged(self.table, self._entity(lease.key, lease.owner, expires_at), lease.etag)
        if etag is None:
            lease.lost = True
            raise LeaseLost(f"lease {decode_key(lease.key)} was taken over by another worker", 5.0)
        lease.etag, lease.expires_at = etag, expires_at

    async def release(self, lease: Lease) -> None:
        # If it expired and another worker took it over, it is theirs now: nothing to release.
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            await self.table.delete_entity(
                self.partition, lease.key, etag=lease.etag, match_condition=MatchConditions.IfNotModified
            )
