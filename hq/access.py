"""Who may do what: users, roles, argon2id passwords, expiring sessions, training, and the
gate every access to ALPR information passes through (which also writes the access log).

Roles (Civil Code 1798.90.51(b): the usage policy names who may access ALPR information):

- administrator: manages users, approves releases, publishes hot lists, and may use data
- investigator: searches, views, exports for a case, places holds, enters hot-list entries
- auditor: reads the access log and audit reports; no plate data
- technician: runs retention and system checks; no plate data

Data access (search, view, image, export, alerts, holds, hot-list contents) also needs
current training (1798.90.51(b)(2)(B)); a user whose training is missing or expired is
refused, and the refusal is logged like any other access.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hq.accesslog import AccessLog
from hq.db import Database
from hq.errors import AccessDenied, NotFound, PolicyError

ROLES = ("administrator", "investigator", "auditor", "technician")
PERMISSIONS: dict[str, frozenset[str]] = {
    "search": frozenset({"administrator", "investigator"}),
    "view": frozenset({"administrator", "investigator"}),
    "image": frozenset({"administrator", "investigator"}),
    "export": frozenset({"administrator", "investigator"}),
    "alerts": frozenset({"administrator", "investigator"}),
    "alert-verify": frozenset({"administrator", "investigator"}),
    "hold": frozenset({"administrator", "investigator"}),
    "hold-list": frozenset({"administrator", "investigator"}),
    "hotlist-edit": frozenset({"administrator", "investigator"}),
    "hotlist-view": frozenset({"administrator", "investigator"}),
    "hotlist-publish": frozenset({"administrator"}),
    "release-request": frozenset({"administrator", "investigator"}),
    "release-review": frozenset({"administrator"}),
    "users": frozenset({"administrator"}),
    "audit": frozenset({"administrator", "auditor"}),
    "retention": frozenset({"administrator", "technician"}),
}
# Actions that touch ALPR information: they need current training and a purpose.
DATA_ACTIONS = frozenset({"search", "view", "image", "export", "alerts", "alert-verify", "hold", "hold-list",
                          "hotlist-edit", "hotlist-view", "hotlist-publish", "release-request", "release-review"})
# Actions that must name a case. Placing or releasing a hold does; listing holds ("hold-list")
# does not: the list spans every case (a --case given to it is still logged).
CASE_ACTIONS = frozenset({"export", "hold", "release-request"})
MIN_PASSWORD = 12
DAY_NS = 86400 * 10**9


@dataclass(frozen=True)
class Actor:
    """An authenticated user."""

    name: str
    role: str


@dataclass(frozen=True)
class Grant:
    """Permission for one access, already recorded in the access log."""

    actor: Actor
    action: str
    purpose: str
    case_no: str
    log_id: int


@dataclass(frozen=True)
class User:
    """A user record (without the password hash)."""

    name: str
    role: str
    trained_until_ns: int | None
    active: bool


SYSTEM = Actor("system", "technician")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Access:
    """Users, logins and the access gate of one store."""

    def __init__(self, db: Database, *, session_hours: float = 8.0, clock: Callable[[], int] = time.time_ns,
                 hasher: Any = None) -> None:
        from argon2 import (
            PasswordHasher,  # argon2-cffi: PasswordHasher's default type is argon2id
        )

        self.db = db
        self.clock = clock
        self.session_ns = int(session_hours * 3600 * 10**9)
        self.hasher = hasher or PasswordHasher()
        self.log = AccessLog(db, clock)

    # -- users ------------------------------------------------------------------------
    def has_users(self) -> bool:
        return bool(self.db.value("SELECT 1 FROM users LIMIT 1"))

    def add_user(self, by: Actor | None, name: str, role: str, password: str,
                 trained_until_ns: int | None = None) -> User:
        """Create a user. `by` must be an administrator, except for the very first user (bootstrap)."""
        if role not in ROLES:
            raise PolicyError(f"role {role!r}: must be one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise PolicyError(f"password: at least {MIN_PASSWORD} characters")
        if not name or not name.replace("-", "").replace(".", "").replace("_", "").isalnum():
            raise PolicyError(f"user name {name!r}: letters, digits, '.', '-', '_' only")
        with self.db.transaction(lock="users"):
            if by is None:
                if self.has_users():
                    raise AccessDenied("users exist already: an administrator must add users")
                if role != "administrator":
                    raise PolicyError("the first user must be an administrator")
                creator = "bootstrap"
            else:
                self.require_role(by, "users")
                creator = by.name
            if self.db.value("SELECT 1 FROM users WHERE name=?", (name,)):
                raise PolicyError(f"user {name!r} exists already")
            self.db.execute("INSERT INTO users (name, role, password_hash, trained_until_ns, active, created_ns, "
                            "created_by) VALUES (?,?,?,?,1,?,?)",
                            (name, role, self.hasher.hash(password), trained_until_ns, self.clock(), creator))
            self.log.append(user=creator, role=by.role if by else "bootstrap", action="user-add", purpose="administration",
                            query={"user": name, "role": role, "trained_until_ns": trained_until_ns})
        return self.user(name)

    def user(self, name: str) -> User:
        row = self.db.one("SELECT name, role, trained_until_ns, active FROM users WHERE name=?", (name,))
        if row is None:
            raise NotFound(f"user {name!r}: no such user")
        return User(row[0], row[1], row[2], bool(row[3]))

    def users(self) -> list[User]:
        return [User(r[0], r[1], r[2], bool(r[3]))
                for r in self.db.rows("SELECT name, role, trained_until_ns, active FROM users ORDER BY name")]

    def set_training(self, by: Actor, name: str, trained_until_ns: int | None) -> None:
        """Record when a user's ALPR training expires (None: no training on file)."""
        self.require_role(by, "users")
        self.user(name)
        with self.db.transaction():
            self.db.execute("UPDATE users SET trained_until_ns=? WHERE name=?", (trained_until_ns, name))
            self.log.append(user=by.name, role=by.role, action="user-training", purpose="administration",
                            query={"user": name, "trained_until_ns": trained_until_ns})

    def set_active(self, by: Actor, name: str, active: bool) -> None:
        """Disable (or re-enable) a user; disabling also ends their sessions."""
        self.require_role(by, "users")
        self.user(name)
        with self.db.transaction():
            self.db.execute("UPDATE users SET active=? WHERE name=?", (int(active), name))
            if not active:
                self.db.execute("UPDATE sessions SET ended_ns=? WHERE user_name=? AND ended_ns IS NULL",
                                (self.clock(), name))
            self.log.append(user=by.name, role=by.role, action="user-enable" if active else "user-disable",
                            purpose="administration", query={"user": name})

    def set_password(self, by: Actor, name: str, password: str) -> None:
        """Change a password: one's own, or anyone's for an administrator."""
        if by.name != name:
            self.require_role(by, "users")
        if len(password) < MIN_PASSWORD:
            raise PolicyError(f"password: at least {MIN_PASSWORD} characters")
        self.user(name)
        with self.db.transaction():
            self.db.execute("UPDATE users SET password_hash=? WHERE name=?", (self.hasher.hash(password), name))
            self.log.append(user=by.name, role=by.role, action="user-password", purpose="administration",
                            query={"user": name})

    # -- login and sessions -----------------------------------------------------------------
    def authenticate(self, name: str, password: str) -> Actor:
        """Check a password; AccessDenied (logged) if wrong, unknown or disabled."""
        from argon2.exceptions import InvalidHashError, VerificationError

        row = self.db.one("SELECT role, password_hash, active FROM users WHERE name=?", (name,))
        ok = False
        if row is not None:
            try:
                ok = self.hasher.verify(row[1], password)
            except (VerificationError, InvalidHashError):
                ok = False
        if not ok or not row[2]:
            self.log.append(user=name, role=row[0] if row else "unknown", action="login", outcome="denied",
                            purpose="login", detail="disabled" if ok else "bad user name or password")
            raise AccessDenied(f"login as {name!r} refused: bad user name or password, or user disabled")
        if self.hasher.check_needs_rehash(row[1]):
            self.db.execute("UPDATE users SET password_hash=? WHERE name=?", (self.hasher.hash(password), name))
        return Actor(name, row[0])

    def login(self, name: str, password: str) -> str:
        """A new session token for the user (valid `session_hours`); only its hash is stored."""
        actor = self.authenticate(name, password)
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self.db.transaction():
            self.db.execute("INSERT INTO sessions (token_sha256, user_name, created_ns, expires_ns) VALUES (?,?,?,?)",
                            (_token_hash(token), actor.name, now, now + self.session_ns))
            self.log.append(user=actor.name, role=actor.role, action="login", purpose="login")
        return token

    def session(self, token: str) -> Actor:
        """The user of a live session; AccessDenied if unknown, ended or expired."""
        row = self.db.one("SELECT s.user_name, s.expires_ns, s.ended_ns, u.role, u.active FROM sessions s "
                          "JOIN users u ON u.name = s.user_name WHERE s.token_sha256=?", (_token_hash(token),))
        if row is None or row[2] is not None:
            raise AccessDenied("session is not valid (logged out or unknown): log in again")
        if row[1] <= self.clock():
            raise AccessDenied("session expired: log in again")
        if not row[4]:
            raise AccessDenied(f"user {row[0]!r} is disabled")
        return Actor(row[0], row[3])

    def logout(self, token: str) -> None:
        """End a session (safe on an unknown or ended one)."""
        self.db.execute("UPDATE sessions SET ended_ns=? WHERE token_sha256=? AND ended_ns IS NULL",
                        (self.clock(), _token_hash(token)))

    # -- the gate ---------------------------------------------------------------------------
    def require_role(self, actor: Actor, action: str) -> None:
        """AccessDenied unless the actor's role has the permission (for non-data actions)."""
        if actor.role not in PERMISSIONS[action]:
            raise AccessDenied(f"user {actor.name!r} ({actor.role}) may not {action}")

    def authorize(self, actor: Actor, action: str, *, purpose: str, case_no: str = "",
                  query: Mapping[str, Any] | None = None) -> Grant:
        """Allow one access or refuse it; either way the attempt is recorded in the access log.

        Refusals: unknown action, role without the permission, training missing or expired
        (data actions), no purpose, no case number where the action needs one.
        """
        if action not in PERMISSIONS:
            raise PolicyError(f"unknown action {action!r}")
        purpose = (purpose or "").strip()
        case_no = (case_no or "").strip()
        reason = None
        if actor.role not in PERMISSIONS[action]:
            reason = f"role {actor.role} may not {action}"
        elif action in DATA_ACTIONS:
            row = self.db.one("SELECT trained_until_ns, active FROM users WHERE name=?", (actor.name,))
            if row is None or not row[1]:
                reason = f"user {actor.name!r} is unknown or disabled"
            elif row[0] is None:
                reason = f"user {actor.name!r} has no ALPR training on file"
            elif row[0] <= self.clock():
                reason = f"user {actor.name!r}: ALPR training expired"
        if reason is None and not purpose:
            reason = "a purpose is required (--purpose)"
        if reason is None and action in CASE_ACTIONS and not case_no:
            reason = f"{action} requires a case number (--case)"
        if reason is not None:
            self.log.append(user=actor.name, role=actor.role, action=action, outcome="denied", purpose=purpose,
                            case_no=case_no, query=query, detail=reason)
            raise AccessDenied(f"{action} refused: {reason}")
        entry = self.log.append(user=actor.name, role=actor.role, action=action, purpose=purpose, case_no=case_no,
                                query=query)
        return Grant(actor, action, purpose, case_no, entry.id)

    def record(self, grant: Grant, action: str, *, query: Mapping[str, Any] | None = None, detail: str = "") -> None:
        """Record a follow-up access under an existing grant (e.g. each image written by a search)."""
        self.log.append(user=grant.actor.name, role=grant.actor.role, action=action, purpose=grant.purpose,
                        case_no=grant.case_no, query=query, detail=detail)
