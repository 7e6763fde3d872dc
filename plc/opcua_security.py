"""Who may do what on the station's OPC UA server: users, roles, password checks, the ruleset.

Roles (each includes the one before):
- ``read-only``: browse, read, subscribe to data changes and events;
- ``operator``: also call the state-machine methods (Halt, Reset, StartSingleJob,
  StartContinuous, Stop, Abort, SelectModeAutomatic, ConfirmAll);
- ``engineer``: also call every other method (recipes, configurations) and write.

Anonymous sessions are refused unless the config allows them, and then they are read-only: no
anonymous write or method call, ever.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.crypto.permission_rules import PermissionRuleset, User, UserRole
from asyncua.ua.ua_binary import struct_from_binary
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.errors import ConfigError

log = logging.getLogger(__name__)


class Role(str, Enum):
    READ_ONLY = "read-only"
    OPERATOR = "operator"
    ENGINEER = "engineer"


OPERATOR_METHODS = frozenset(
    {"Halt", "Reset", "StartSingleJob", "StartContinuous", "Stop", "Abort", "SelectModeAutomatic", "ConfirmAll"}
)


class UserConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1)
    role: Literal["read-only", "operator", "engineer"] = "read-only"
    password_env: str | None = Field(None, description="Environment variable holding the password (preferred).")
    password_hash: str | None = Field(None, description="'pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>'.")
    password: str | None = Field(None, description="Plain password (tests and labs only).")

    @model_validator(mode="after")
    def _one_secret(self) -> UserConfig:
        given = [k for k in ("password_env", "password_hash", "password") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"user {self.name!r}: give exactly one of password_env, password_hash, password")
        return self


def hash_password(password: str, iterations: int = 200_000, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _check_hash(password: str, encoded: str) -> bool:
    try:
        algo, iters, salt_b64, hash_b64 = encoded.split("$")
        if algo != "pbkdf2_sha256":
            return False
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt_b64), int(iters))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, base64.b64decode(hash_b64))


@dataclass
class StationUser(User):
    """An authenticated session's user, with its station role."""

    access: Role = Role.READ_ONLY


@dataclass
class _Account:
    role: Role
    check: Any  # (password) -> bool


@dataclass
class StationUserManager:
    """Checks username/password against the configured users; anonymous only when allowed (read-only)."""

    users: list[UserConfig]
    allow_anonymous: bool = False
    refused: int = 0
    _accounts: dict[str, _Account] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for u in self.users:
            if u.name in self._accounts:
                raise ConfigError(f"opcua users: {u.name!r} is listed twice")
            if u.password_env is not None:
                secret = os.environ.get(u.password_env)
                if secret is None:
                    raise ConfigError(f"opcua user {u.name!r}: environment variable {u.password_env} is not set")
                self._accounts[u.name] = _Account(Role(u.role), self._plain(secret))
            elif u.password_hash is not None:
                self._accounts[u.name] = _Account(Role(u.role), lambda p, h=u.password_hash: _check_hash(p, h))
            else:
                self._accounts[u.name] = _Account(Role(u.role), self._plain(u.password or ""))

    @staticmethod
    def _plain(secret: str) -> Any:
        return lambda p: hmac.compare_digest(p.encode(), secret.encode())

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is None:
            if self.allow_anonymous:
                return StationUser(role=UserRole.User, name=None, access=Role.READ_ONLY)
            self.refused += 1
            log.warning("opcua: anonymous session refused")
            return None
        account = self._accounts.get(username)
        if account is None or not account.check(password or ""):
            self.refused += 1
            log.warning("opcua: login refused for user %r", username)
            return None
        return StationUser(role=UserRole.User, name=username, access=account.role)


def _ids(names: Iterable[str]) -> frozenset[ua.NodeId]:
    return frozenset(ua.NodeId(ua.Int32(getattr(ua.ObjectIds, f"{n}Request_Encoding_DefaultBinary"))) for n in names)


_SESSION = _ids(
    ["CreateSession", "ActivateSession", "CloseSession", "GetEndpoints", "FindServers", "CloseSecureChannel"]
)
_READ = _ids([
    "Read", "Browse", "BrowseNext", "TranslateBrowsePathsToNodeIds", "RegisterNodes", "UnregisterNodes",
    "CreateSubscription", "ModifySubscription", "DeleteSubscriptions", "TransferSubscriptions", "SetPublishingMode",
    "CreateMonitoredItems", "ModifyMonitoredItems", "DeleteMonitoredItems", "SetMonitoringMode", "Publish",
    "Republish", "HistoryRead",
])
_CALL = ua.NodeId(ua.Int32(ua.ObjectIds.CallRequest_Encoding_DefaultBinary))
_WRITE = ua.NodeId(ua.Int32(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary))


class StationRuleset(PermissionRuleset):
    """asyncua permission ruleset implementing the three roles (checked per request)."""

    def __init__(self) -> None:
        self.operator_methods: set[ua.NodeId] = set()  # filled by the server with the linked method nodes
        self.read_methods: set[ua.NodeId] = set()  # methods that only read: every role may call them
        self.denied = 0

    def check_validity(self, user: Any, action_type_id: ua.NodeId, body: Any) -> bool:
        ok = self._check(user, action_type_id, body)
        if not ok:
            self.denied += 1
        return ok

    def _check(self, user: Any, action_type_id: ua.NodeId, body: Any) -> bool:
        if action_type_id in _SESSION:
            return True
        access = getattr(user, "access", None)
        if not isinstance(access, Role):
            return False  # a session without one of our users (cannot happen with StationUserManager)
        if action_type_id in _READ:
            return True
        if action_type_id == _CALL:
            if access is Role.ENGINEER:
                return True
            if access is Role.OPERATOR:
                return self._calls_only(body, self.operator_methods | self.read_methods)
            return self._calls_only(body, self.read_methods)
        if action_type_id == _WRITE:
            return access is Role.ENGINEER
        return False

    def _calls_only(self, body: Any, allowed: set[ua.NodeId]) -> bool:
        try:
            params = struct_from_binary(ua.CallParameters, body.copy() if isinstance(body, Buffer) else Buffer(body))
        except Exception:  # undecodable: refuse
            return False
        methods = params.MethodsToCall or []
        return bool(methods) and all(m.MethodId in allowed for m in methods)
