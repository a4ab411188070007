"""Web Manager users as replicated documents of kind "users": roles, argon2 password hashes, hashed API tokens."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import time
from enum import IntEnum
from typing import Any, NamedTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cluster.commands import DeleteDocument, PutDocument
from cluster.state import ProcessImage

logger = logging.getLogger(__name__)

KIND = "users"
FIRST_ADMIN = "admin"
SYSTEM_USER = "tandem"  # who creates the first admin, in the audit trail
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_TOKENS = 20  # API tokens per user

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)  # argon2id, OWASP's 19 MiB / 2 passes / 1 lane


@functools.cache
def _dummy_hash() -> str:
    """Verified against for unknown users, so that their answer takes as long as a known user's."""
    return _hasher.hash(secrets.token_urlsafe())


class Role(IntEnum):
    """The roles, each allowed what the ones below it are."""

    viewer = 1
    operator = 2
    engineer = 3
    admin = 4


class User(NamedTuple):
    """A user as the image holds it: body {"role", "password": argon2 hash or None, "tokens": {id: {"sha256", "created"}}}."""

    name: str
    role: Role
    password: str | None
    tokens: dict[str, dict[str, Any]]
    version: int


def find(image: ProcessImage, name: str) -> User | None:
    document = image.documents.get(KIND, {}).get(name)
    if document is None:
        return None
    body = document.body
    return User(name, Role[body["role"]], body.get("password"), body.get("tokens", {}), document.version)


def listing(image: ProcessImage) -> list[dict[str, Any]]:
    """Every user without secrets: name, role, whether a password is set, token ids and when they were created."""
    users = []
    for name, document in sorted(image.documents.get(KIND, {}).items()):
        user = find(image, name)
        assert user is not None
        tokens = [{"id": token_id, "created": token["created"]} for token_id, token in sorted(user.tokens.items())]
        users.append({"name": name, "role": user.role.name, "password_set": user.password is not None, "tokens": tokens,
                      "updated_by": document.updated_by, "updated_ts": document.updated_ts})
    return users


def verify_password(user: User | None, password: str) -> bool:
    """Whether `password` is `user`'s (slow, argon2: call it in a thread); an unknown user costs as much as a known one."""
    stored = user.password if user is not None else None
    try:
        _hasher.verify(stored or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return stored is not None


def password_stamp(user: User) -> str:
    """Changes whenever the password does (each hash has a fresh salt): sessions carry it, so a new password ends them."""
    return hashlib.sha256((user.password or "").encode()).hexdigest()[:16]


def _token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_user(image: ProcessImage, token: str) -> User | None:
    """The user an API token `tdm_<id>_<secret>` belongs to, or None."""
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != "tdm" or not token_id or not secret:
        return None
    for name, document in image.documents.get(KIND, {}).items():
        stored = document.body.get("tokens", {}).get(token_id)
        if stored is not None and hmac.compare_digest(stored["sha256"], _token_hash(secret)):
            return find(image, name)
    return None


def hash_password(password: str) -> str:
    """The argon2 hash of a password (slow: call it in a thread)."""
    return _hasher.hash(password)


def put_user(image: ProcessImage, name: str, role: Role | None, password_hash: str | None, acting: str) -> PutDocument:
    """The command creating user `name` (a role is required) or changing its role and/or password."""
    current = find(image, name)
    if current is None and role is None:
        raise ValueError(f"no user named {name!r}: creating one needs a role")
    body = {
        "role": (role or current.role).name,
        "password": password_hash or (current.password if current else None),
        "tokens": current.tokens if current else {},
    }
    return PutDocument(KIND, name, body, acting, time.time(), expected_version=current.version if current else 0)


def new_token(image: ProcessImage, name: str, acting: str) -> tuple[PutDocument, str]:
    """The command adding an API token to user `name`, and the token (shown once, stored as its SHA-256)."""
    current = find(image, name)
    if current is None:
        raise LookupError(f"no user named {name!r}")
    if len(current.tokens) >= MAX_TOKENS:
        raise ValueError(f"user {name} has {MAX_TOKENS} tokens already")
    token_id, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    now = time.time()
    body = {"role": current.role.name, "password": current.password, "tokens": {**current.tokens, token_id: {"sha256": _token_hash(secret), "created": now}}}
    return PutDocument(KIND, name, body, acting, now, expected_version=current.version), f"tdm_{token_id}_{secret}"


def delete_user(image: ProcessImage, name: str, acting: str) -> DeleteDocument:
    current = find(image, name)
    if current is None:
        raise LookupError(f"no user named {name!r}")
    return DeleteDocument(KIND, name, acting, time.time(), expected_version=current.version)


def one_time_password() -> str:
    return secrets.token_urlsafe(12)


def first_admin(image: ProcessImage, password_hash: str) -> PutDocument | None:
    """While there are no users: the command creating `admin` with the (one-time) password hashed as given; None once
    users exist. It only creates (expected version 0): of two planned before either applied, one applies."""
    if image.documents.get(KIND):
        return None
    body = {"role": Role.admin.name, "password": password_hash, "tokens": {}}
    return PutDocument(KIND, FIRST_ADMIN, body, SYSTEM_USER, time.time(), expected_version=0)
