"""A Microsoft Graph v1.0 emulator: the users, groups, delta, subscriptions, change notifications,
Identity Protection and invitations that entra-sync calls, wire-compatible with msgraph-sdk.

State lives in memory under ``self.lock``. Every change gets a sequence number; delta tokens carry
the sequence they were issued at, so a later round returns exactly what changed since.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from sandbox.graph.mail import Outbox
from sandbox.graph.notify import Delivery, Notifier, handshake, is_loopback_url
from sandbox.graph.odata import compile_filter, parse_datetime, parse_filter, parse_select, project, unsupported
from sandbox.server import Emulator, HttpError, RateDecision, Request, Response
from sandbox.tenant import DEFAULT_DOMAIN, Tenant, build_tenant, new_guid, risk_detection

DEFAULT_TENANT_ID = "5a7d0c4e-2b1f-4c3a-9e8d-6f0a1b2c3d4e"
SUBSCRIPTION_MAX_MINUTES = 41_760  # users and groups
DELTA_TOKEN_TTL_S = 7 * 86_400

#: What Graph returns for a user without ``$select`` (no accountEnabled, department, employeeId...).
USER_DEFAULT = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
GROUP_DEFAULT = (
    "id",
    "createdDateTime",
    "description",
    "displayName",
    "groupTypes",
    "mail",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "visibility",
)
USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
READ_ONLY_USER = frozenset({"id", "createdDateTime", "deletedDateTime", "userType", "externalUserState"})
RISK_ORDER = {"none": 0, "low": 1, "medium": 2, "high": 3, "hidden": 0}

_USER_FILTER = {"id": {"eq"}, "userPrincipalName": {"eq"}, "mail": {"eq"}, "employeeId": {"eq"}}
_DATE_OPS = {"eq", "ge", "gt", "le", "lt"}
_DETECTION_FILTER = {
    "detectedDateTime": _DATE_OPS,
    "lastUpdatedDateTime": _DATE_OPS,
    "activityDateTime": _DATE_OPS,
    "riskLevel": {"eq"},
    "riskState": {"eq"},
    "riskEventType": {"eq"},
    "userId": {"eq"},
    "userPrincipalName": {"eq"},
}
_RISKY_USER_FILTER = {
    "riskLastUpdatedDateTime": _DATE_OPS,
    "riskLevel": {"eq"},
    "riskState": {"eq"},
    "id": {"eq"},
    "userPrincipalName": {"eq"},
}
_ID = r"(?P<id>[^/]+)"
GRAPH_SERVICE_PRINCIPAL_ID = "00000000-0000-4000-8000-00000000a11c"  # Microsoft Graph's, in the sandbox tenant
_REF = r"(?:\$|%24)ref"
_DELTA = r"delta(?:\(\)|%28%29)?"


def _now() -> float:
    return time.time()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_when(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float):
        return float(value)
    return parse_datetime(str(value)).timestamp()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(token: str) -> str:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def _ref_id(body: Any) -> str:
    """The object id at the end of an ``{"@odata.id": ".../directoryObjects/{id}"}`` body."""
    ref = body.get("@odata.id") if isinstance(body, dict) else None
    if not isinstance(ref, str) or not ref.strip("/"):
        raise HttpError(400, "Request_BadRequest", "The request body must carry an '@odata.id' reference.")
    return ref.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class _Cursor:
    """A delta round being paged: the objects to return and the sequence its deltaLink carries."""

    kind: str
    ids: list[str]
    end_seq: int
    select: list[str] | None
    members: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)


@dataclass
class Subscription:
    id: str
    resource: str
    kind: str  # users | groups
    change_types: frozenset[str]
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: float
    created: float

    def to_json(self) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.subscription",
            "id": self.id,
            "resource": self.resource,
            "applicationId": "00000000-0000-0000-0000-00000000a11c",
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": _iso(self.expires),
            "creatorId": "00000000-0000-0000-0000-00000000c0de",
            "includeResourceData": False,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


class GraphEmulator(Emulator):
    api_prefix = "/v1.0"
    name = "graph"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "sandbox-graph-token",
        tenant_id: str = DEFAULT_TENANT_ID,
        fault_seed: int = 0,
        handshake_timeout_s: float = 10.0,
        *,
        delta_token_ttl_s: float = DELTA_TOKEN_TTL_S,
        delta_page_size: int = 200,
        id_seed: int = 0,
    ) -> None:
        super().__init__(host, port, fault_seed)
        self.token = token
        self.tenant_id = tenant_id
        self.handshake_timeout_s = handshake_timeout_s
        self.delta_token_ttl_s = delta_token_ttl_s
        self.delta_page_size = delta_page_size
        self._id_seed = id_seed
        self._local = threading.local()
        self.notifier = Notifier(should_drop=self._drop_notification, seed=fault_seed)
        self._token_gen = 0
        self._init_state(DEFAULT_DOMAIN)
        self._register_routes()
        self._register_controls()
        self.outbox = Outbox(self.lock)  # Graph sendMail (sandbox/graph/mail.py)
        self.outbox.register(self, self.api_prefix)

    # ==========================================================================================
    # State
    # ==========================================================================================

    def _init_state(self, domain: str) -> None:
        self.domain = domain
        self._ids = random.Random(f"graph-ids-{self._id_seed}")
        self._users: dict[str, dict[str, Any]] = {}
        self._deleted: dict[str, dict[str, Any]] = {}
        self._upn: dict[str, str] = {}  # casefolded UPN -> id (active users)
        self._groups: dict[str, dict[str, Any]] = {}
        self._members: dict[str, dict[str, None]] = {}  # group -> ordered member ids
        self._parents: dict[str, set[str]] = {}  # member -> groups it is a direct member of
        self._managers: dict[str, str] = {}
        self._seq = 0
        self._user_log: list[tuple[int, str]] = []
        self._hard_deleted: set[str] = set()
        self._group_log: list[tuple[int, str]] = []
        self._member_log: list[tuple[int, str, str, bool]] = []
        self._deleted_groups: set[str] = set()
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._subscriptions: dict[str, Subscription] = {}
        self._detections: list[dict[str, Any]] = []
        self._risky: dict[str, dict[str, Any]] = {}
        self._invitations: dict[str, dict[str, Any]] = {}
        self._app_roles: dict[str, list[str]] = {}  # service principal id -> Graph app role ids granted
        self._token_gen += 1  # tokens from before a reset are gone, as after a tenant restore

    def _new_id(self) -> str:
        return new_guid(self._ids)

    def _bump(self) -> int:
        self._seq += 1
        return self._seq

    def reset(self) -> None:
        with self.lock:
            self._init_state(DEFAULT_DOMAIN)
            self.notifier.reset()
            self.outbox.reset()

    def seed(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Replace the tenant with ``build_tenant(users, groups, seed, ...)``."""
        known = {"users", "groups", "seed", "domain", "risk_detections", "disabled_rate", "guest_rate"}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown seed keys {sorted(unknown)} (known: {sorted(known)})")
        extra = {k: spec[k] for k in ("domain", "risk_detections", "disabled_rate", "guest_rate") if k in spec}
        tenant = build_tenant(
            int(spec.get("users", 100)), int(spec.get("groups", 10)), int(spec.get("seed", 0)), **extra
        )
        with self.lock:
            self.load_tenant(tenant)
            return {"seed": int(spec.get("seed", 0)), **self.snapshot()}

    def load_tenant(self, tenant: Tenant) -> None:
        """Replace all state with ``tenant`` (no delta history, no notifications)."""
        with self.lock:
            self._init_state(tenant.domain)
            for user in tenant.users:
                self._users[user["id"]] = user
                self._upn[user["userPrincipalName"].casefold()] = user["id"]
            self._managers = dict(tenant.managers)
            for group in tenant.groups:
                self._groups[group["id"]] = group
                self._members[group["id"]] = {}
            for gid, member_ids in tenant.memberships.items():
                for mid in member_ids:
                    self._link(gid, mid)
            for gid, child_ids in tenant.nested_groups.items():
                for cid in child_ids:
                    self._link(gid, cid)
            for detection in tenant.risk_detections:
                self._record_detection(dict(detection))

    def snapshot(self, full: bool = False) -> dict[str, Any]:
        with self.lock:
            summary: dict[str, Any] = {
                "users": len(self._users),
                "deleted_users": len(self._deleted),
                "groups": len(self._groups),
                "memberships": sum(len(m) for m in self._members.values()),
                "subscriptions": len(self._subscriptions),
                "risk_detections": len(self._detections),
                "risky_users": len(self._risky),
                "invitations": len(self._invitations),
                "sequence": self._seq,
                "notifications": self.notifier.stats.as_dict(),
            }
            if full:
                summary["dump"] = {
                    "users": list(self._users.values()),
                    "deleted_users": list(self._deleted.values()),
                    "groups": list(self._groups.values()),
                    "members": {gid: list(m) for gid, m in self._members.items()},
                    "managers": dict(self._managers),
                    "subscriptions": [s.to_json() for s in self._subscriptions.values()],
                    "risk_detections": list(self._detections),
                    "risky_users": list(self._risky.values()),
                }
            return summary

    # -- change recording ------------------------------------------------------------------------

    def _user_changed(self, uid: str, change: str = "updated") -> None:
        self._user_log.append((self._bump(), uid))
        self._notify("users", uid, change)

    def _group_changed(self, gid: str, change: str = "updated") -> None:
        self._group_log.append((self._bump(), gid))
        self._notify("groups", gid, change)

    def _link(self, gid: str, mid: str) -> None:
        self._members[gid][mid] = None
        self._parents.setdefault(mid, set()).add(gid)

    def _unlink(self, gid: str, mid: str) -> None:
        self._members.get(gid, {}).pop(mid, None)
        parents = self._parents.get(mid)
        if parents is not None:
            parents.discard(gid)
            if not parents:
                del self._parents[mid]

    # ==========================================================================================
    # Python helpers (tests and scenario scripts); each is also a control endpoint
    # ==========================================================================================

    def create_user(self, **props: Any) -> dict[str, Any]:
        """Create a member user; missing attributes get plain defaults. Returns the stored user."""
        with self.lock:
            uid = str(props.pop("id", None) or self._new_id())
            if uid in self._users or uid in self._deleted:
                raise HttpError(400, "Request_BadRequest", f"An object with id {uid} already exists.")
            nickname = props.get("mailNickname") or f"user{len(self._users) + len(self._deleted)}"
            upn = props.get("userPrincipalName") or f"{nickname}@{self.domain}"
            self._check_upn_free(upn)
            user: dict[str, Any] = {
                "id": uid,
                "displayName": nickname,
                "givenName": None,
                "surname": None,
                "userPrincipalName": upn,
                "mail": None,
                "mailNickname": nickname,
                "department": None,
                "jobTitle": None,
                "officeLocation": None,
                "mobilePhone": None,
                "businessPhones": [],
                "employeeId": None,
                "companyName": None,
                "city": None,
                "country": None,
                "accountEnabled": True,
                "userType": "Member",
                "createdDateTime": _iso(_now())[:19] + "Z",
                "preferredLanguage": None,
            }
            props.pop("passwordProfile", None)
            user.update(props)
            user["userPrincipalName"] = upn
            self._users[uid] = user
            self._upn[upn.casefold()] = uid
            self._user_changed(uid)
            return dict(user)

    def _check_upn_free(self, upn: str, except_id: str | None = None) -> None:
        folded = upn.casefold()
        holders = [self._upn[folded]] if folded in self._upn else []
        holders += [u["id"] for u in self._deleted.values() if u["userPrincipalName"].casefold() == folded]
        if any(holder != except_id for holder in holders):
            raise HttpError(
                400,
                "Request_BadRequest",
                "Another object with the same value for property userPrincipalName already exists.",
            )

    def update_user(self, user_id: str, **changes: Any) -> dict[str, Any]:
        with self.lock:
            user = self._require_user(user_id)
            bad = READ_ONLY_USER.intersection(changes) - {"userType"}
            if bad:
                raise HttpError(400, "Request_BadRequest", f"Property '{sorted(bad)[0]}' is read-only.")
            changes.pop("passwordProfile", None)
            if "userPrincipalName" in changes and changes["userPrincipalName"] != user["userPrincipalName"]:
                self._check_upn_free(changes["userPrincipalName"], except_id=user["id"])
                del self._upn[user["userPrincipalName"].casefold()]
                self._upn[changes["userPrincipalName"].casefold()] = user["id"]
            user.update(changes)
            self._user_changed(user["id"])
            return dict(user)

    def soft_delete_user(self, user_id: str) -> None:
        """Move a user to deleted items (delta: ``@removed`` reason ``changed``)."""
        with self.lock:
            user = self._require_user(user_id)
            del self._users[user["id"]]
            self._upn.pop(user["userPrincipalName"].casefold(), None)
            user["deletedDateTime"] = _iso(_now())[:19] + "Z"
            self._deleted[user["id"]] = user
            self._user_changed(user["id"])

    def restore_user(self, user_id: str) -> dict[str, Any]:
        with self.lock:
            user = self._deleted.pop(user_id, None)
            if user is None:
                raise self._not_found(user_id)
            user.pop("deletedDateTime", None)
            self._users[user_id] = user
            self._upn[user["userPrincipalName"].casefold()] = user_id
            self._user_changed(user_id)
            return dict(user)

    def hard_delete_user(self, user_id: str) -> None:
        """Delete permanently (soft-deleting first when needed); delta: ``@removed`` ``deleted``."""
        with self.lock:
            if user_id in self._deleted:
                uid = user_id
                del self._deleted[uid]
            else:
                uid = self._require_user(user_id)["id"]
                self._upn.pop(self._users[uid]["userPrincipalName"].casefold(), None)
                del self._users[uid]
            for gid in list(self._parents.get(uid, ())):
                self._unlink(gid, uid)
            self._managers.pop(uid, None)
            for report in [r for r, m in self._managers.items() if m == uid]:
                del self._managers[report]
            self._hard_deleted.add(uid)
            self._user_changed(uid, "deleted")

    def set_manager(self, user_id: str, manager_id: str | None) -> None:
        with self.lock:
            uid = self._require_user(user_id)["id"]
            if manager_id is None:
                if self._managers.pop(uid, None) is None:
                    raise HttpError(404, "Request_ResourceNotFound", f"User '{uid}' has no manager.")
            else:
                mid = self._require_user(manager_id)["id"]
                if mid == uid:
                    raise HttpError(400, "Request_BadRequest", "A user cannot be their own manager.")
                self._managers[uid] = mid
            self._user_changed(uid)

    def create_group(self, **props: Any) -> dict[str, Any]:
        with self.lock:
            gid = str(props.pop("id", None) or self._new_id())
            name = props.get("displayName") or f"group{len(self._groups)}"
            group: dict[str, Any] = {
                "id": gid,
                "displayName": name,
                "mailNickname": name.lower().replace(" ", "-"),
                "description": None,
                "securityEnabled": True,
                "mailEnabled": False,
                "groupTypes": [],
                "createdDateTime": _iso(_now())[:19] + "Z",
                "visibility": None,
            }
            group.update(props)
            self._groups[gid] = group
            self._members[gid] = {}
            self._group_changed(gid)
            return dict(group)

    def update_group(self, group_id: str, **changes: Any) -> dict[str, Any]:
        with self.lock:
            group = self._require_group(group_id)
            if "id" in changes:
                raise HttpError(400, "Request_BadRequest", "Property 'id' is read-only.")
            group.update(changes)
            self._group_changed(group_id)
            return dict(group)

    def delete_group(self, group_id: str) -> None:
        with self.lock:
            self._require_group(group_id)
            for mid in list(self._members.get(group_id, {})):
                self._unlink(group_id, mid)
            for parent in list(self._parents.get(group_id, ())):
                self._unlink(parent, group_id)
            del self._groups[group_id]
            del self._members[group_id]
            self._deleted_groups.add(group_id)
            self._group_changed(group_id, "deleted")

    def add_member(self, group_id: str, member_id: str) -> None:
        with self.lock:
            self._require_group(group_id)
            if member_id not in self._users and member_id not in self._groups:
                raise self._not_found(member_id)
            if member_id == group_id:
                raise HttpError(400, "Request_BadRequest", "A group cannot be a member of itself.")
            if member_id in self._members[group_id]:
                raise HttpError(
                    400,
                    "Request_BadRequest",
                    "One or more added object references already exist for the following modified properties: "
                    "'members'.",
                )
            self._link(group_id, member_id)
            self._member_log.append((self._seq + 1, group_id, member_id, True))
            self._group_changed(group_id)

    def remove_member(self, group_id: str, member_id: str) -> None:
        with self.lock:
            self._require_group(group_id)
            if member_id not in self._members[group_id]:
                raise self._not_found(member_id)
            self._unlink(group_id, member_id)
            self._member_log.append((self._seq + 1, group_id, member_id, False))
            self._group_changed(group_id)

    def raise_risk(
        self,
        user_id: str,
        level: str = "high",
        event_type: str = "unfamiliarFeatures",
        detected_at: Any = None,
        ip_address: str = "203.0.113.7",
    ) -> dict[str, Any]:
        """Record a risk detection for a user and mark the user at risk. Returns the detection."""
        if level not in {"low", "medium", "high"}:
            raise ValueError("level must be low, medium or high")
        with self.lock:
            user = self._require_user(user_id)
            when = _now() if detected_at is None else _parse_when(detected_at)
            detection = risk_detection(
                self._new_id(), user, level=level, event_type=event_type, detected_epoch=when, ip_address=ip_address
            )
            self._record_detection(detection)
            return dict(detection)

    def _record_detection(self, detection: dict[str, Any]) -> None:
        self._detections.append(detection)
        uid = detection["userId"]
        risky = self._risky.get(uid)
        level = detection["riskLevel"]
        if risky is not None and risky["riskState"] == "atRisk" and RISK_ORDER[risky["riskLevel"]] > RISK_ORDER[level]:
            level = risky["riskLevel"]
        last = detection["lastUpdatedDateTime"]
        if risky is not None and risky["riskLastUpdatedDateTime"] > last:
            last = risky["riskLastUpdatedDateTime"]
        self._risky[uid] = {
            "id": uid,
            "isDeleted": False,
            "isProcessing": False,
            "riskLastUpdatedDateTime": last,
            "riskLevel": level,
            "riskState": "atRisk",
            "riskDetail": "none",
            "userDisplayName": detection["userDisplayName"],
            "userPrincipalName": detection["userPrincipalName"],
        }

    def set_user_risk_state(self, user_ids: list[str], state: str) -> None:
        """``dismissed`` or ``confirmedCompromised`` for the listed risky users (others ignored)."""
        level, detail = {
            "dismissed": ("none", "adminDismissedAllRiskForUser"),
            "confirmedCompromised": ("high", "adminConfirmedUserCompromised"),
        }[state]
        stamp = _iso(_now())[:19] + "Z"
        with self.lock:
            for uid in user_ids:
                risky = self._risky.get(uid)
                if risky is None:
                    continue
                risky.update(riskState=state, riskLevel=level, riskDetail=detail, riskLastUpdatedDateTime=stamp)
                for detection in self._detections:
                    if detection["userId"] == uid and detection["riskState"] == "atRisk":
                        detection.update(riskState=state, riskDetail=detail, lastUpdatedDateTime=stamp)

    def expire_delta_tokens(self) -> None:
        """Every delta token and paging cursor issued so far answers 410 ``syncStateNotFound``."""
        with self.lock:
            self._token_gen += 1
            self._cursors.clear()

    def expire_subscription(self, subscription_id: str) -> None:
        with self.lock:
            sub = self._require_subscription(subscription_id)
            sub.expires = _now() - 1

    def emit_reauthorization_required(self, subscription_id: str | None = None) -> int:
        """Queue ``reauthorizationRequired`` for one subscription (or all live ones); returns the count."""
        with self.lock:
            subs = [self._require_subscription(subscription_id)] if subscription_id else self._live_subscriptions()
            deliveries = []
            for sub in subs:
                url = sub.lifecycle_url
                if url is None:
                    continue
                deliveries.append(
                    Delivery(
                        url,
                        {
                            "subscriptionId": sub.id,
                            "subscriptionExpirationDateTime": _iso(sub.expires),
                            "tenantId": self.tenant_id,
                            "clientState": sub.client_state,
                            "lifecycleEvent": "reauthorizationRequired",
                            "resource": sub.resource,
                        },
                    )
                )
            self.notifier.enqueue(deliveries)
            return len(deliveries)

    def configure_notifications(self, **settings: Any) -> dict[str, Any]:
        """drop_rate, flush_s, retries, backoff_s, timeout_s, max_batch, max_copies, hold_max_s, seed."""
        return self.notifier.configure(settings)

    def wait_notifications(self, timeout_s: float = 5.0) -> bool:
        """Block until queued notifications are delivered or given up."""
        return self.notifier.idle(timeout_s)

    # -- lookups -------------------------------------------------------------------------------

    def _not_found(self, key: str) -> HttpError:
        return HttpError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
        )

    def _require_user(self, key: str) -> dict[str, Any]:
        user = self._users.get(key)
        if user is None:
            uid = self._upn.get(key.casefold())
            user = self._users.get(uid) if uid else None
        if user is None:
            raise self._not_found(key)
        return user

    def _require_group(self, gid: str) -> dict[str, Any]:
        group = self._groups.get(gid)
        if group is None:
            raise self._not_found(gid)
        return group

    def _require_subscription(self, sid: str) -> Subscription:
        sub = self._subscriptions.get(sid)
        if sub is None or sub.expires <= _now():
            raise HttpError(404, "ResourceNotFound", f"The object was not found: subscription '{sid}'.")
        return sub

    def _live_subscriptions(self) -> list[Subscription]:
        now = _now()
        return [s for s in self._subscriptions.values() if s.expires > now]

    # ==========================================================================================
    # Vendor hooks
    # ==========================================================================================

    def dispatch(self, request: Request) -> Response:
        self._local.client_request_id = request.headers.get("client-request-id") or str(uuid.uuid4())
        self._local.request_id = str(uuid.uuid4())
        response = super().dispatch(request)
        if not request.path.startswith("/_control/"):
            response.headers.setdefault("request-id", self._local.request_id)
            response.headers.setdefault("client-request-id", self._local.client_request_id)
        return response

    def authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        if not header:
            raise HttpError(401, "InvalidAuthenticationToken", "Access token is empty.")
        if header != f"Bearer {self.token}":
            raise HttpError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")

    _CODE_MAP = {
        "not_found": "BadRequest",
        "method_not_allowed": "Request_BadRequest",
        "too_many_requests": "TooManyRequests",
        "empty_body": "BadRequest",
        "invalid_body": "BadRequest",
        "emulator_error": "InternalServerError",
    }

    def error_response(self, error: HttpError) -> Response:
        code = self._CODE_MAP.get(error.code, error.code)
        if error.code == "injected_fault":
            code = {500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable"}.get(
                error.status, "UnknownError"
            )
        body = {
            "error": {
                "code": code,
                "message": error.message,
                "innerError": {
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": getattr(self._local, "request_id", str(uuid.uuid4())),
                    "client-request-id": getattr(self._local, "client_request_id", str(uuid.uuid4())),
                },
            }
        }
        return Response.json(body, error.status, error.headers)

    def rate_limited_response(self, route: str, decision: RateDecision) -> Response:
        message = "Too many requests. The request was throttled; retry later."
        return self.error_response(HttpError(429, "TooManyRequests", message, self.rate_limit_headers(decision)))

    def on_start(self) -> None:
        self.notifier.start()

    def on_stop(self) -> None:
        self.notifier.stop()

    def _drop_notification(self) -> bool:
        return self.faults.chance(self.notifier.drop_rate)

    def _notify(self, kind: str, obj_id: str, change: str) -> None:
        subs = [s for s in self._live_subscriptions() if s.kind == kind and change in s.change_types]
        if not subs:
            return
        title = "Users" if kind == "users" else "Groups"
        odata_type = "#Microsoft.Graph.User" if kind == "users" else "#Microsoft.Graph.Group"
        deliveries = [
            Delivery(
                sub.notification_url,
                {
                    "subscriptionId": sub.id,
                    "subscriptionExpirationDateTime": _iso(sub.expires),
                    "changeType": change,
                    "resource": f"{title}/{obj_id}",
                    "resourceData": {
                        "@odata.type": odata_type,
                        "@odata.id": f"{title}/{obj_id}",
                        "id": obj_id,
                        "organizationId": self.tenant_id,
                    },
                    "clientState": sub.client_state,
                    "tenantId": self.tenant_id,
                },
            )
            for sub in subs
        ]
        self.notifier.enqueue(deliveries)

    # ==========================================================================================
    # Routes
    # ==========================================================================================

    def _register_routes(self) -> None:
        p = self.api_prefix
        r = self.add_route
        r("GET", rf"{p}/users/{_DELTA}", "users.delta", self._users_delta)
        r("GET", rf"{p}/groups/{_DELTA}", "groups.delta", self._groups_delta)
        r("GET", rf"{p}/users", "users.list", self._users_list)
        r("POST", rf"{p}/users", "users.create", self._users_create)
        r("GET", rf"{p}/users/{_ID}", "users.get", self._users_get)
        r("PATCH", rf"{p}/users/{_ID}", "users.update", self._users_update)
        r("DELETE", rf"{p}/users/{_ID}", "users.delete", self._users_delete)
        r("GET", rf"{p}/users/{_ID}/manager", "users.manager.get", self._manager_get)
        r("PUT", rf"{p}/users/{_ID}/manager/{_REF}", "users.manager.set", self._manager_set)
        r("DELETE", rf"{p}/users/{_ID}/manager/{_REF}", "users.manager.delete", self._manager_delete)
        r("DELETE", rf"{p}/users/{_ID}/manager", "users.manager.delete", self._manager_delete)
        r("GET", rf"{p}/users/{_ID}/memberOf", "users.memberOf", self._member_of)
        r("GET", rf"{p}/users/{_ID}/transitiveMemberOf", "users.transitiveMemberOf", self._transitive_member_of)
        r("GET", rf"{p}/directory/deletedItems/microsoft\.graph\.user", "deletedItems.users", self._deleted_list)
        r("GET", rf"{p}/directory/deletedItems/{_ID}", "deletedItems.get", self._deleted_get)
        r("DELETE", rf"{p}/directory/deletedItems/{_ID}", "deletedItems.delete", self._deleted_delete)
        r("POST", rf"{p}/directory/deletedItems/{_ID}/restore", "deletedItems.restore", self._deleted_restore)
        r("GET", rf"{p}/groups", "groups.list", self._groups_list)
        r("POST", rf"{p}/groups", "groups.create", self._groups_create)
        r("GET", rf"{p}/groups/{_ID}", "groups.get", self._groups_get)
        r("PATCH", rf"{p}/groups/{_ID}", "groups.update", self._groups_update)
        r("DELETE", rf"{p}/groups/{_ID}", "groups.delete", self._groups_delete)
        r("GET", rf"{p}/groups/{_ID}/members", "groups.members.list", self._members_list)
        r("GET", rf"{p}/groups/{_ID}/transitiveMembers", "groups.transitiveMembers", self._transitive_members_list)
        r("POST", rf"{p}/groups/{_ID}/members/{_REF}", "groups.members.add", self._members_add)
        r(
            "DELETE",
            rf"{p}/groups/{_ID}/members/(?P<member>[^/]+)/{_REF}",
            "groups.members.remove",
            self._members_remove,
        )
        r("GET", rf"{p}/subscriptions", "subscriptions.list", self._subs_list)
        r("POST", rf"{p}/subscriptions", "subscriptions.create", self._subs_create)
        r("GET", rf"{p}/subscriptions/{_ID}", "subscriptions.get", self._subs_get)
        r("PATCH", rf"{p}/subscriptions/{_ID}", "subscriptions.update", self._subs_update)
        r("DELETE", rf"{p}/subscriptions/{_ID}", "subscriptions.delete", self._subs_delete)
        r("POST", rf"{p}/subscriptions/{_ID}/reauthorize", "subscriptions.reauthorize", self._subs_reauthorize)
        r("GET", rf"{p}/servicePrincipals/{_ID}/appRoleAssignments", "servicePrincipals.appRoleAssignments",
          self._app_role_assignments)  # fmt: skip
        ip = f"{p}/identityProtection"
        r("GET", rf"{ip}/riskDetections", "identityProtection.riskDetections.list", self._detections_list)
        r("GET", rf"{ip}/riskDetections/{_ID}", "identityProtection.riskDetections.get", self._detections_get)
        r("GET", rf"{ip}/riskyUsers", "identityProtection.riskyUsers.list", self._risky_list)
        r("POST", rf"{ip}/riskyUsers/dismiss", "identityProtection.riskyUsers.dismiss", self._risky_dismiss)
        r(
            "POST",
            rf"{ip}/riskyUsers/confirmCompromised",
            "identityProtection.riskyUsers.confirmCompromised",
            self._risky_confirm,
        )
        r("GET", rf"{ip}/riskyUsers/{_ID}", "identityProtection.riskyUsers.get", self._risky_get)
        r("POST", rf"{p}/invitations", "invitations.create", self._invitations_create)

    # -- query helpers -------------------------------------------------------------------------

    def _link_for(self, path: str, params: dict[str, str]) -> str:
        query = "&".join(f"{k}={quote(v, safe=',$()')}" for k, v in params.items())
        return f"{self.origin}{path}" + (f"?{query}" if query else "")

    @staticmethod
    def _top(request: Request, default: int, maximum: int = 999) -> int:
        raw = request.arg("$top")
        if raw is None:
            return default
        try:
            top = int(raw)
        except ValueError:
            raise HttpError(400, "BadRequest", f"Invalid value '{raw}' for $top.") from None
        if not 1 <= top <= maximum:
            raise HttpError(
                400,
                "Request_BadRequest",
                f"Invalid page size specified: '{top}'. Must be between 1 and {maximum} inclusive.",
            )
        return top

    @staticmethod
    def _reject(request: Request, *names: str) -> None:
        for name in names:
            if request.arg(name) is not None:
                raise unsupported(f"The query parameter '{name}' is not supported on this sandbox endpoint.")

    def _page(
        self,
        request: Request,
        items: list[dict[str, Any]],
        render: Callable[[dict[str, Any]], dict[str, Any]],
        context: str,
        default_top: int = 100,
    ) -> Response:
        """One page of ``items`` with ``@odata.nextLink`` (``$skiptoken`` is an offset)."""
        top = self._top(request, default_top)
        offset = 0
        token = request.arg("$skiptoken")
        if token is not None:
            try:
                kind, _, number = _unb64(token).partition(":")
                offset = int(number)
                if kind != "o" or offset < 0:
                    raise ValueError(token)
            except (ValueError, binascii.Error, UnicodeDecodeError):
                raise HttpError(400, "Request_BadRequest", "The $skiptoken is not valid.") from None
        payload: dict[str, Any] = {"@odata.context": f"{self.base_url}/$metadata#{context}"}
        if request.arg("$count") == "true":
            payload["@odata.count"] = len(items)
        payload["value"] = [render(item) for item in items[offset : offset + top]]
        if offset + top < len(items):
            params = {k: v[0] for k, v in request.query.items() if k != "$skiptoken"}
            params["$skiptoken"] = _b64(f"o:{offset + top}")
            payload["@odata.nextLink"] = self._link_for(request.path, params)
        return Response.json(payload)

    def _user_view(self, request: Request) -> Callable[[dict[str, Any]], dict[str, Any]]:
        select = parse_select(request.arg("$select"))
        expand = request.arg("$expand")
        manager_select: list[str] | None = None
        if expand is not None:
            expand = expand.strip()
            if expand == "manager":
                manager_select = None
            elif expand.startswith("manager(") and expand.endswith(")"):
                inner = expand[len("manager(") : -1]
                if not inner.startswith("$select="):
                    raise unsupported("Only $select is supported inside $expand=manager(...).")
                manager_select = parse_select(inner[len("$select=") :])
            else:
                raise unsupported(f"Unsupported $expand '{expand}': only manager is supported.")

        def render(user: dict[str, Any]) -> dict[str, Any]:
            out = project(user, select, USER_DEFAULT)
            if expand is not None:
                manager = self._users.get(self._managers.get(user["id"], ""))
                if manager is not None:
                    out["manager"] = {"@odata.type": USER_TYPE, **project(manager, manager_select, USER_DEFAULT)}
            return out

        return render

    # -- users ---------------------------------------------------------------------------------

    def _users_list(self, request: Request) -> Response:
        self._reject(request, "$orderby", "$search")
        with self.lock:
            render = self._user_view(request)
            filter_text = request.arg("$filter")
            if filter_text is None:
                users = list(self._users.values())
            else:
                comparisons = parse_filter(filter_text)
                predicate = compile_filter(
                    comparisons, _USER_FILTER, case_insensitive=frozenset({"userPrincipalName", "mail"})
                )
                direct = [c for c in comparisons if c.prop in {"id", "userPrincipalName"}]
                if direct:  # answer from an index instead of scanning 100k users
                    first = direct[0]
                    key = str(first.value)
                    uid = key if first.prop == "id" else self._upn.get(key.casefold(), "")
                    candidates = [self._users[uid]] if uid in self._users else []
                else:
                    candidates = list(self._users.values())
                users = [u for u in candidates if predicate(u)]
            return self._page(request, users, render, "users")

    def _users_get(self, request: Request) -> Response:
        with self.lock:
            user = self._require_user(request.params["id"])
            out = self._user_view(request)(user)
            return Response.json({"@odata.context": f"{self.base_url}/$metadata#users/$entity", **out})

    def _users_create(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "BadRequest", "The body must be a user object.")
        for required in ("accountEnabled", "displayName", "mailNickname", "userPrincipalName", "passwordProfile"):
            if body.get(required) in (None, ""):
                raise HttpError(
                    400, "Request_BadRequest", f"Invalid value specified for property '{required}' of resource 'User'."
                )
        body.pop("@odata.type", None)
        bad = READ_ONLY_USER.intersection(body) - {"userType"}
        if bad:
            raise HttpError(400, "Request_BadRequest", f"Property '{sorted(bad)[0]}' is read-only.")
        user = self.create_user(**body)
        return Response.json({"@odata.context": f"{self.base_url}/$metadata#users/$entity", **user}, 201)

    def _users_update(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "BadRequest", "The body must be a user object.")
        body.pop("@odata.type", None)
        self.update_user(request.params["id"], **body)
        return Response.empty()

    def _users_delete(self, request: Request) -> Response:
        self.soft_delete_user(request.params["id"])
        return Response.empty()

    def _manager_get(self, request: Request) -> Response:
        with self.lock:
            user = self._require_user(request.params["id"])
            manager = self._users.get(self._managers.get(user["id"], ""))
            if manager is None:
                raise self._not_found("manager")
            select = parse_select(request.arg("$select"))
            return Response.json({"@odata.type": USER_TYPE, **project(manager, select, USER_DEFAULT)})

    def _manager_set(self, request: Request) -> Response:
        self.set_manager(request.params["id"], _ref_id(request.json()))
        return Response.empty()

    def _manager_delete(self, request: Request) -> Response:
        self.set_manager(request.params["id"], None)
        return Response.empty()

    def _groups_of(self, request: Request, transitive: bool) -> Response:
        with self.lock:
            uid = self._require_user(request.params["id"])["id"]
            direct = self._parents.get(uid, set())
            if transitive:
                seen: set[str] = set()
                todo = list(direct)
                while todo:
                    gid = todo.pop()
                    if gid not in seen:
                        seen.add(gid)
                        todo.extend(self._parents.get(gid, ()))
                ids = seen
            else:
                ids = set(direct)
            groups = [self._groups[g] for g in sorted(ids) if g in self._groups]
            select = parse_select(request.arg("$select"))
            return self._page(
                request,
                groups,
                lambda g: {"@odata.type": GROUP_TYPE, **project(g, select, GROUP_DEFAULT)},
                "directoryObjects",
            )

    def _member_of(self, request: Request) -> Response:
        return self._groups_of(request, transitive=False)

    def _transitive_member_of(self, request: Request) -> Response:
        return self._groups_of(request, transitive=True)

    # -- deleted items -------------------------------------------------------------------------

    def _deleted_view(self, user: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
        return {"@odata.type": USER_TYPE, **project(user, select, (*USER_DEFAULT, "deletedDateTime"))}

    def _deleted_list(self, request: Request) -> Response:
        with self.lock:
            select = parse_select(request.arg("$select"))
            users = list(self._deleted.values())
            return self._page(request, users, lambda u: self._deleted_view(u, select), "directoryObjects")

    def _deleted_get(self, request: Request) -> Response:
        with self.lock:
            user = self._deleted.get(request.params["id"])
            if user is None:
                raise self._not_found(request.params["id"])
            return Response.json(self._deleted_view(user, parse_select(request.arg("$select"))))

    def _deleted_delete(self, request: Request) -> Response:
        with self.lock:
            if request.params["id"] not in self._deleted:
                raise self._not_found(request.params["id"])
            self.hard_delete_user(request.params["id"])
        return Response.empty()

    def _deleted_restore(self, request: Request) -> Response:
        user = self.restore_user(request.params["id"])
        return Response.json({"@odata.type": USER_TYPE, **project(user, None, USER_DEFAULT)})

    # -- groups --------------------------------------------------------------------------------

    def _groups_list(self, request: Request) -> Response:
        self._reject(request, "$orderby", "$search")
        with self.lock:
            select = parse_select(request.arg("$select"))
            groups = list(self._groups.values())
            filter_text = request.arg("$filter")
            if filter_text is not None:
                allowed = {"id": {"eq"}, "displayName": {"eq"}, "mailNickname": {"eq"}}
                predicate = compile_filter(parse_filter(filter_text), allowed)
                groups = [g for g in groups if predicate(g)]
            return self._page(request, groups, lambda g: project(g, select, GROUP_DEFAULT), "groups")

    def _groups_get(self, request: Request) -> Response:
        with self.lock:
            group = self._require_group(request.params["id"])
            return Response.json(project(group, parse_select(request.arg("$select")), GROUP_DEFAULT))

    def _groups_create(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "BadRequest", "The body must be a group object.")
        for required in ("displayName", "mailEnabled", "mailNickname", "securityEnabled"):
            if body.get(required) in (None, ""):
                raise HttpError(
                    400, "Request_BadRequest", f"Invalid value specified for property '{required}' of resource 'Group'."
                )
        body.pop("@odata.type", None)
        return Response.json(self.create_group(**body), 201)

    def _groups_update(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "BadRequest", "The body must be a group object.")
        body.pop("@odata.type", None)
        self.update_group(request.params["id"], **body)
        return Response.empty()

    def _groups_delete(self, request: Request) -> Response:
        self.delete_group(request.params["id"])
        return Response.empty()

    def _members_list(self, request: Request) -> Response:
        return self._list_members(request, transitive=False)

    def _transitive_members_list(self, request: Request) -> Response:
        return self._list_members(request, transitive=True)

    def _list_members(self, request: Request, transitive: bool) -> Response:
        with self.lock:
            gid = self._require_group(request.params["id"])["id"]
            select = parse_select(request.arg("$select"))
            ids: dict[str, None] = dict(self._members[gid])
            if transitive:  # members of nested groups too, each once, the groups themselves included
                todo = [m for m in ids if m in self._groups]
                seen = {gid}
                while todo:
                    child = todo.pop()
                    if child in seen:
                        continue
                    seen.add(child)
                    for mid in self._members.get(child, {}):
                        ids.setdefault(mid, None)
                        if mid in self._groups:
                            todo.append(mid)
            members: list[dict[str, Any]] = []
            for mid in ids:
                if mid in self._users:
                    members.append({"@odata.type": USER_TYPE, **project(self._users[mid], select, USER_DEFAULT)})
                elif mid in self._groups:
                    members.append({"@odata.type": GROUP_TYPE, **project(self._groups[mid], select, GROUP_DEFAULT)})
            return self._page(request, members, lambda m: m, "directoryObjects")

    def _members_add(self, request: Request) -> Response:
        self.add_member(request.params["id"], _ref_id(request.json()))
        return Response.empty()

    def _members_remove(self, request: Request) -> Response:
        self.remove_member(request.params["id"], request.params["member"])
        return Response.empty()

    # -- delta ---------------------------------------------------------------------------------

    def _issue_token(self, kind: str, seq: int) -> str:
        return _b64(f"{kind}~{self._token_gen}~{seq}~{int(_now())}")

    def _read_token(self, kind: str, token: str) -> int:
        try:
            token_kind, gen, seq, issued = _unb64(token).split("~")
            gen_n, seq_n, issued_n = int(gen), int(seq), int(issued)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise HttpError(400, "BadRequest", "The delta token is not valid.") from None
        if token_kind != kind:
            raise HttpError(400, "BadRequest", f"The delta token was not issued for {kind}.")
        if gen_n != self._token_gen or _now() - issued_n > self.delta_token_ttl_s:
            raise self._sync_state_gone()
        return seq_n

    @staticmethod
    def _sync_state_gone() -> HttpError:
        return HttpError(
            410,
            "syncStateNotFound",
            "The requested sync state was not found or has expired; start a new round of delta without a token.",
        )

    def _delta(self, request: Request, kind: str) -> Response:
        self._reject(request, "$top", "$orderby", "$expand", "$search", "$filter")
        with self.lock:
            skiptoken = request.arg("$skiptoken")
            if skiptoken is not None:
                # A skiptoken names a stored round and a position, so a retried nextLink replays.
                key, _, pos = skiptoken.partition(".")
                cursor = self._cursors.get(key)
                if cursor is None or cursor.kind != kind or not pos.isdigit():
                    raise self._sync_state_gone()
                self._cursors.move_to_end(key)
                return self._delta_page(request, cursor, key, int(pos))
            select = parse_select(request.arg("$select"))
            deltatoken = request.arg("$deltatoken")
            if deltatoken == "latest":
                return self._delta_page(request, _Cursor(kind, [], self._seq, select), "", 0)
            since = None if deltatoken is None else self._read_token(kind, deltatoken)
            cursor = self._user_cursor(since, select) if kind == "users" else self._group_cursor(since, select)
            return self._delta_page(request, cursor, "", 0)

    def _users_delta(self, request: Request) -> Response:
        return self._delta(request, "users")

    def _groups_delta(self, request: Request) -> Response:
        return self._delta(request, "groups")

    def _changed_since(self, log: list[tuple[int, str]], since: int) -> list[str]:
        start = bisect.bisect_right(log, since, key=lambda entry: entry[0])
        return list(dict.fromkeys(oid for _, oid in log[start:]))

    def _user_cursor(self, since: int | None, select: list[str] | None) -> _Cursor:
        ids = list(self._users) if since is None else self._changed_since(self._user_log, since)
        return _Cursor("users", ids, self._seq, select)

    def _group_cursor(self, since: int | None, select: list[str] | None) -> _Cursor:
        members: dict[str, list[tuple[str, bool]]] = {}
        if since is None:
            ids = list(self._groups)
            for gid in ids:
                members[gid] = [(mid, True) for mid in self._members[gid]]
        else:
            ids = self._changed_since(self._group_log, since)
            start = bisect.bisect_right(self._member_log, since, key=lambda entry: entry[0])
            net: dict[str, dict[str, bool]] = {}
            for _, gid, mid, added in self._member_log[start:]:
                net.setdefault(gid, {})[mid] = added
            for gid, changes in net.items():
                members[gid] = list(changes.items())
        return _Cursor("groups", ids, self._seq, select, members)

    def _delta_page(self, request: Request, cursor: _Cursor, key: str, pos: int) -> Response:
        size = self.delta_page_size
        prefer = request.headers.get("prefer", "")
        for part in prefer.split(","):
            name, _, value = part.strip().partition("=")
            if name == "odata.maxpagesize" and value.isdigit():
                size = max(1, min(int(value), 999))
        chunk = cursor.ids[pos : pos + size]
        pos += len(chunk)
        render = self._render_user_delta if cursor.kind == "users" else self._render_group_delta
        payload: dict[str, Any] = {
            "@odata.context": f"{self.base_url}/$metadata#{cursor.kind}",
            "value": [render(oid, cursor) for oid in chunk],
        }
        path = f"{self.api_prefix}/{cursor.kind}/delta()"
        params: dict[str, str] = {}
        if pos < len(cursor.ids):
            if not key:
                key = uuid.uuid4().hex
                self._cursors[key] = cursor
                while len(self._cursors) > 256:
                    self._cursors.popitem(last=False)
            params["$skiptoken"] = f"{key}.{pos}"
            link = "@odata.nextLink"
        else:
            params["$deltatoken"] = self._issue_token(cursor.kind, cursor.end_seq)
            link = "@odata.deltaLink"
        if cursor.select is not None:
            params["$select"] = ",".join(cursor.select)
        payload[link] = self._link_for(path, params)
        return Response.json(payload)

    def _render_user_delta(self, uid: str, cursor: _Cursor) -> dict[str, Any]:
        user = self._users.get(uid)
        if user is not None:
            return project(user, cursor.select, USER_DEFAULT)
        reason = "changed" if uid in self._deleted else "deleted"
        return {"id": uid, "@removed": {"reason": reason}}

    def _render_group_delta(self, gid: str, cursor: _Cursor) -> dict[str, Any]:
        group = self._groups.get(gid)
        if group is None:
            return {"id": gid, "@removed": {"reason": "deleted"}}
        select = None if cursor.select is None else [s for s in cursor.select if s != "members"]
        out = project(group, select, GROUP_DEFAULT)
        if cursor.select is None or "members" in cursor.select:
            entries = []
            for mid, added in cursor.members.get(gid, []):
                entry: dict[str, Any] = {"@odata.type": GROUP_TYPE if mid in self._groups else USER_TYPE, "id": mid}
                if not added:
                    entry["@removed"] = {"reason": "deleted"}
                entries.append(entry)
            out["members@delta"] = entries
        return out

    # -- subscriptions -------------------------------------------------------------------------

    def _validate_expiration(self, raw: Any) -> float:
        if not isinstance(raw, str):
            raise HttpError(400, "ValidationError", "expirationDateTime is required.")
        try:
            expires = parse_datetime(raw).timestamp()
        except ValueError:
            raise HttpError(
                400, "ValidationError", f"expirationDateTime '{raw}' is not a valid DateTimeOffset."
            ) from None
        now = _now()
        if expires <= now:
            raise HttpError(400, "ValidationError", "Subscription expiration must be in the future.")
        if expires > now + SUBSCRIPTION_MAX_MINUTES * 60:
            raise HttpError(
                400,
                "ValidationError",
                f"Subscription expiration can only be {SUBSCRIPTION_MAX_MINUTES} minutes in the future "
                "for this resource.",
            )
        return expires

    def _validate_url(self, name: str, url: Any) -> str:
        if not isinstance(url, str) or not url:
            raise HttpError(400, "ValidationError", f"{name} is required.")
        if not is_loopback_url(url):
            raise HttpError(
                400,
                "ValidationError",
                f"{name} must be a loopback URL (127.0.0.1, localhost or ::1) in the sandbox; got '{url}'.",
            )
        return url

    def _handshake(self, url: str) -> None:
        problem = handshake(url, self.handshake_timeout_s)
        if problem is not None:
            raise HttpError(
                400,
                "ValidationError",
                "Subscription validation request failed. Notification endpoint must respond with 200 OK to "
                f"validation request ({url}: {problem}).",
            )

    def _subs_create(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "BadRequest", "The body must be a subscription object.")
        resource = body.get("resource")
        kind = resource.strip("/").lower() if isinstance(resource, str) else ""
        if kind not in {"users", "groups"}:
            raise HttpError(
                400, "ValidationError", f"Resource '{resource}' is not supported in the sandbox (users, groups)."
            )
        change_type = body.get("changeType")
        changes = [c.strip() for c in change_type.split(",")] if isinstance(change_type, str) else []
        if not changes or any(c not in {"created", "updated", "deleted"} for c in changes):
            raise HttpError(
                400, "ValidationError", f"changeType '{change_type}' is invalid: use created, updated and/or deleted."
            )
        client_state = body.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
            raise HttpError(400, "ValidationError", "clientState must be a string of at most 128 characters.")
        if body.get("includeResourceData"):
            raise HttpError(400, "ValidationError", "includeResourceData is not supported for users and groups.")
        expires = self._validate_expiration(body.get("expirationDateTime"))
        url = self._validate_url("notificationUrl", body.get("notificationUrl"))
        lifecycle = body.get("lifecycleNotificationUrl")
        if lifecycle is not None:
            lifecycle = self._validate_url("lifecycleNotificationUrl", lifecycle)
        self._handshake(url)  # outside the lock: the receiver may call back into the emulator
        if lifecycle is not None and lifecycle != url:
            self._handshake(lifecycle)
        with self.lock:
            sub = Subscription(
                id=str(uuid.uuid4()),
                resource=str(resource),
                kind=kind,
                change_types=frozenset(changes),
                change_type=str(change_type),
                notification_url=url,
                lifecycle_url=lifecycle,
                client_state=client_state,
                expires=expires,
                created=_now(),
            )
            self._subscriptions[sub.id] = sub
            return Response.json(
                {"@odata.context": f"{self.base_url}/$metadata#subscriptions/$entity", **sub.to_json()}, 201
            )

    def _subs_list(self, request: Request) -> Response:
        with self.lock:
            subs = [s.to_json() for s in self._live_subscriptions()]
            return self._page(request, subs, lambda s: s, "subscriptions")

    def _subs_get(self, request: Request) -> Response:
        with self.lock:
            return Response.json(self._require_subscription(request.params["id"]).to_json())

    def _subs_update(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "BadRequest", "The body must be a subscription object.")
        with self.lock:
            self._require_subscription(request.params["id"])
        expires = self._validate_expiration(body["expirationDateTime"]) if "expirationDateTime" in body else None
        url = self._validate_url("notificationUrl", body["notificationUrl"]) if "notificationUrl" in body else None
        if url is not None:
            self._handshake(url)
        with self.lock:
            sub = self._require_subscription(request.params["id"])
            if expires is not None:
                sub.expires = expires
            if url is not None:
                sub.notification_url = url
            return Response.json(sub.to_json())

    def _subs_delete(self, request: Request) -> Response:
        with self.lock:
            self._require_subscription(request.params["id"])
            del self._subscriptions[request.params["id"]]
        return Response.empty()

    def _subs_reauthorize(self, request: Request) -> Response:
        with self.lock:
            self._require_subscription(request.params["id"])
        return Response.empty()

    # -- identity protection -------------------------------------------------------------------

    def _detections_list(self, request: Request) -> Response:
        self._reject(request, "$orderby", "$search")
        with self.lock:
            items = list(self._detections)
            filter_text = request.arg("$filter")
            if filter_text is not None:
                predicate = compile_filter(
                    parse_filter(filter_text),
                    _DETECTION_FILTER,
                    datetimes=frozenset({"detectedDateTime", "lastUpdatedDateTime", "activityDateTime"}),
                )
                items = [d for d in items if predicate(d)]
            select = parse_select(request.arg("$select"))
            return self._page(request, items, lambda d: project(d, select, list(d)), "riskDetections")

    def _detections_get(self, request: Request) -> Response:
        with self.lock:
            for detection in self._detections:
                if detection["id"] == request.params["id"]:
                    return Response.json(detection)
        raise self._not_found(request.params["id"])

    def _risky_list(self, request: Request) -> Response:
        self._reject(request, "$orderby", "$search")
        with self.lock:
            items = list(self._risky.values())
            filter_text = request.arg("$filter")
            if filter_text is not None:
                predicate = compile_filter(
                    parse_filter(filter_text),
                    _RISKY_USER_FILTER,
                    case_insensitive=frozenset({"userPrincipalName"}),
                    datetimes=frozenset({"riskLastUpdatedDateTime"}),
                )
                items = [u for u in items if predicate(u)]
            select = parse_select(request.arg("$select"))
            return self._page(request, items, lambda u: project(u, select, list(u)), "riskyUsers")

    def _risky_get(self, request: Request) -> Response:
        with self.lock:
            risky = self._risky.get(request.params["id"])
            if risky is None:
                raise self._not_found(request.params["id"])
            return Response.json(risky)

    def _risky_ids(self, request: Request) -> list[str]:
        body = request.json()
        ids = body.get("userIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise HttpError(400, "BadRequest", "userIds must be a non-empty list of user ids.")
        if len(ids) > 60:
            raise HttpError(400, "BadRequest", "At most 60 userIds can be given in one request.")
        return [str(i) for i in ids]

    def _risky_dismiss(self, request: Request) -> Response:
        self.set_user_risk_state(self._risky_ids(request), "dismissed")
        return Response.empty()

    def _risky_confirm(self, request: Request) -> Response:
        self.set_user_risk_state(self._risky_ids(request), "confirmedCompromised")
        return Response.empty()

    # -- invitations ---------------------------------------------------------------------------

    def invite(
        self, email: str, redirect_url: str = "https://myapps.microsoft.com", display_name: str | None = None
    ) -> dict[str, Any]:
        """Create (or find) the guest user for ``email``; returns the invitation."""
        if "@" not in email:
            raise HttpError(400, "BadRequest", f"'{email}' is not a valid email address.")
        with self.lock:
            existing = next(
                (u for u in self._users.values() if (u.get("mail") or "").casefold() == email.casefold()), None
            )
            if existing is None:
                local = email.split("@", 1)[0]
                existing = self.create_user(
                    displayName=display_name or local,
                    mail=email,
                    mailNickname=email.replace("@", "_"),
                    userPrincipalName=f"{email.replace('@', '_')}#EXT#@{self.domain}",
                    userType="Guest",
                    externalUserState="PendingAcceptance",
                    externalUserStateChangeDateTime=_iso(_now())[:19] + "Z",
                )
            inv_id = self._new_id()
            invitation = {
                "@odata.context": f"{self.base_url}/$metadata#invitations/$entity",
                "id": inv_id,
                "inviteRedeemUrl": f"https://login.microsoftonline.com/redeem?rd=sandbox-{inv_id}",
                "invitedUserDisplayName": existing["displayName"],
                "invitedUserEmailAddress": email,
                "invitedUserType": "Guest",
                "inviteRedirectUrl": redirect_url,
                "resetRedemption": False,
                "sendInvitationMessage": False,
                "status": "PendingAcceptance",
                "invitedUser": {"id": existing["id"]},
                "invitedUserMessageInfo": None,
            }
            self._invitations[inv_id] = invitation
            return invitation

    def _invitations_create(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("invitedUserEmailAddress"), str):
            raise HttpError(400, "BadRequest", "invitedUserEmailAddress is required.")
        if not isinstance(body.get("inviteRedirectUrl"), str):
            raise HttpError(400, "BadRequest", "inviteRedirectUrl is required.")
        invitation = self.invite(
            body["invitedUserEmailAddress"], body["inviteRedirectUrl"], body.get("invitedUserDisplayName")
        )
        invitation = {**invitation, "sendInvitationMessage": bool(body.get("sendInvitationMessage", False))}
        return Response.json(invitation, 201)

    # ==========================================================================================
    # Control endpoints
    # ==========================================================================================

    def _register_controls(self) -> None:
        c = self.add_control_route
        body = Request.control_body

        def ok(payload: Any = None, status: int = 200) -> Response:
            return Response.empty() if payload is None else Response.json(payload, status)

        def call(action: Callable[..., None], *args: Any) -> Response:
            action(*args)
            return Response.empty()

        def update_user(r: Request) -> Response:
            data = body(r)
            return ok(self.update_user(data.pop("id"), **data))

        def update_group(r: Request) -> Response:
            data = body(r)
            return ok(self.update_group(data.pop("id"), **data))

        c("GET", "/_control/snapshot/full", lambda r: ok(self.snapshot(full=True)))
        c("POST", "/_control/users", lambda r: ok(self.create_user(**body(r)), 201))
        c("PATCH", "/_control/users", update_user)
        c("POST", "/_control/users/soft-delete", lambda r: call(self.soft_delete_user, body(r)["id"]))
        c("POST", "/_control/users/hard-delete", lambda r: call(self.hard_delete_user, body(r)["id"]))
        c("POST", "/_control/users/restore", lambda r: ok(self.restore_user(body(r)["id"])))
        c("PUT", "/_control/managers", lambda r: call(self.set_manager, body(r)["user_id"], body(r).get("manager_id")))
        c("POST", "/_control/groups", lambda r: ok(self.create_group(**body(r)), 201))
        c("PATCH", "/_control/groups", update_group)
        c("POST", "/_control/groups/delete", lambda r: call(self.delete_group, body(r)["id"]))
        c("POST", "/_control/members", lambda r: call(self.add_member, body(r)["group_id"], body(r)["member_id"]))
        c("DELETE", "/_control/members", lambda r: call(self.remove_member, body(r)["group_id"], body(r)["member_id"]))
        c("POST", "/_control/risk", lambda r: ok(self.raise_risk(**body(r)), 201))
        c("POST", "/_control/delta/expire", lambda r: call(self.expire_delta_tokens))
        c("PUT", "/_control/delta", self._control_delta)
        c("GET", "/_control/delta", lambda r: ok({"ttl_s": self.delta_token_ttl_s, "page_size": self.delta_page_size}))
        c(
            "POST",
            "/_control/subscriptions/reauthorization-required",
            lambda r: ok({"queued": self.emit_reauthorization_required(body(r).get("subscription_id"))}),
        )
        c(
            "POST",
            "/_control/subscriptions/expire",
            lambda r: call(self.expire_subscription, body(r)["subscription_id"]),
        )
        c("GET", "/_control/notifications", self._control_notifications_get)
        c("PUT", "/_control/notifications", lambda r: ok(self.configure_notifications(**body(r))))
        c(
            "POST",
            "/_control/notifications/wait",
            lambda r: ok({"idle": self.wait_notifications(float(body(r).get("timeout_s", 5.0)))}),
        )

    def _control_delta(self, request: Request) -> Response:
        data = request.json()
        with self.lock:
            if "ttl_s" in data:
                self.delta_token_ttl_s = float(data["ttl_s"])
            if "page_size" in data:
                self.delta_page_size = max(1, int(data["page_size"]))
            return Response.json({"ttl_s": self.delta_token_ttl_s, "page_size": self.delta_page_size})

    def _control_notifications_get(self, request: Request) -> Response:
        stats = self.notifier.stats
        return Response.json(
            {**self.notifier.settings(), **stats.as_dict(), "dropped_items": list(stats.dropped_items)}
        )

    # -- a service principal's application permissions (what entra-sync doctor reads) --------------

    def grant_app_roles(self, principal_id: str, role_ids: list[str]) -> None:
        """Grant Microsoft Graph application permissions (app role ids) to a service principal, as
        an administrator's grant would; the listing answers them, nothing else checks them."""
        with self.lock:
            self._app_roles[principal_id.lower()] = list(role_ids)

    def _app_role_assignments(self, request: Request) -> Response:
        principal = request.params["id"].lower()
        with self.lock:
            if principal not in self._app_roles:
                raise self._not_found(principal)
            value = [
                {"id": f"{principal}-{n}", "principalId": principal, "resourceId": GRAPH_SERVICE_PRINCIPAL_ID,
                 "appRoleId": role, "resourceDisplayName": "Microsoft Graph", "principalType": "ServicePrincipal"}
                for n, role in enumerate(self._app_roles[principal])
            ]  # fmt: skip
        return Response.json({"value": value})
