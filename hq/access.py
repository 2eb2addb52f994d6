"""Who may do what: users, roles, argon2id passwords, expiring sessions, training, and the
gate every access to ALPR information passes through (which also writes the access log).

Roles (Civil Code 1798.90.51(b): the usage policy names who may access ALPR information):

- administrator: manages users, approves releases, publishes hot lists, and may use data
- investigator: searches, views, exports for a case, places holds, enters hot-list entries
- auditor: reads the access log and audit reports; no plate data
- technician: runs retention and system checks; no plate data

Every action of a logged-in user needs current training (1798.90.51(b)(2)(B): the policy
says all users are trained), data access and administration alike; a user whose training is
missing or expired is refused, and the refusal is logged like any other access. Two
exceptions keep the system usable: the scheduled retention job (`SYSTEM`, no user), and an
administrator managing users (action "users"), so lapsed training can be restored without
locking everyone out.

Attempts by someone who is not logged in at all (no session file, no password for --user,
`users add --bootstrap` once users exist) are refused and logged too, naming the operating-
system account that ran the command as `os:NAME` (role "none"). Those rows carry nothing the
caller typed: a fixed reason, the command's name and the account from the process's user id,
so running HQ without a login cannot put chosen text into the log.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from hq.accesslog import AccessLog
from hq.db import Database
from hq.errors import AccessDenied, HQError, NotFound, PolicyError

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
    # node health: counts and sequence gaps per node, no plate data, but still an access to the store
    "nodes": frozenset({"administrator", "technician", "auditor"}),
    "passwd": frozenset(ROLES),  # one's own password
}
# Actions that touch ALPR information: they need a purpose (training: every action, below).
DATA_ACTIONS = frozenset({"search", "view", "image", "export", "alerts", "alert-verify", "hold", "hold-list",
                          "hotlist-edit", "hotlist-view", "hotlist-publish", "release-request", "release-review"})
# Actions that must name a case. Placing or releasing a hold does; listing holds ("hold-list")
# does not: the list spans every case (a --case given to it is still logged).
CASE_ACTIONS = frozenset({"export", "hold", "release-request"})
# Allowed with lapsed training: an administrator restoring someone's training must not be
# locked out by the rule they are fixing. (Their own training another administrator records:
# `set_training` refuses it, or one administrator could certify themselves.)
TRAINING_EXEMPT = frozenset({"users"})
# Names the access log uses for HQ itself (the retention job, the first user's creator, an
# unknown session): no user may take them, or their rows could not be told apart.
RESERVED_NAMES = frozenset({"system", "bootstrap", "unknown"})
MIN_PASSWORD = 12
DAY_NS = 86400 * 10**9
# The role recorded for someone who is not logged in (no HQ role at all).
NOT_LOGGED_IN = "none"
# Why an attempt without a login was refused: the only details such a row can carry. Fixed
# text, never the caller's input, so that running HQ without a login cannot write chosen text.
NO_LOGIN_REASONS: dict[str, str] = {
    "no-session": "no session: nobody is logged in (no session file)",
    "session-unreadable": "no session: the session file cannot be read",
    "no-password": "no password given for --user (not on a terminal, no $ALPR_HQ_PASSWORD)",
    "users-exist": "users exist already: --bootstrap creates only the first administrator",
    "first-user-role": "first user refused: it must be an administrator",
    "first-user-name": "first user refused: user name not allowed",
    "first-user-password": f"first user refused: password shorter than {MIN_PASSWORD} characters",
    "first-user-input": "first user refused: invalid --trained-until or no password for the new user",
}
# Actions a row without a login may name.
NO_LOGIN_ACTIONS = frozenset({"session", "login", "users"})


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


MAX_NAME = 64
# ASCII only: str.isalnum() accepts every script, so a Cyrillic 'ѕystem' or 'bеa' would pass
# as a look-alike of a reserved name or of another administrator (separation of duties).
_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a user name, or None: a user name is 1-MAX_NAME ASCII letters,
    digits, '.', '-', '_'. No ':' in it, so no user can be confused with the `os:NAME` rows of
    people who were not logged in; no other script, so no name can look like another."""
    if not name or len(name) > MAX_NAME:
        return f"1-{MAX_NAME} characters"
    bad = next((ch for ch in name if ch not in _NAME_CHARS), None)
    if bad is not None:
        return (f"character {bad!r} (U+{ord(bad):04X}) is not allowed: ASCII letters, digits, '.', '-', '_' "
                "only")
    return None


def _name_allowed(name: str) -> bool:
    """True when `name` could be a user name (`name_problem` finds nothing)."""
    return name_problem(name) is None


def _clean(text: str, allowed: str, limit: int) -> str:
    """`text` reduced to the `allowed` characters and `limit` long (for names logged verbatim)."""
    return "".join(ch for ch in text if ch in allowed)[:limit]


def os_account() -> str:
    """The operating-system account running this process, as the access log names someone
    who is not logged in to HQ: "os:NAME" (e.g. "os:alice"; "os:root (sudo alice)").

    Taken from the process's user id, not from $USER / $LOGNAME (which getpass.getuser()
    reads first and anyone can set). Under sudo the account is root and $SUDO_USER (set by
    sudo, and only believed for root, who could write the database anyway) says who ran it.
    """
    uid = os.getuid()
    try:
        import pwd  # POSIX only; HQ runs on Linux

        name = _clean(pwd.getpwuid(uid).pw_name, _NAME_CHARS, MAX_NAME)
    except (ImportError, KeyError):  # no passwd entry (e.g. a container's arbitrary uid)
        name = ""
    name = name or f"uid-{uid}"
    sudo_user = _clean(os.environ.get("SUDO_USER", ""), _NAME_CHARS, MAX_NAME) if uid == 0 else ""
    return f"os:{name}" + (f" (sudo {sudo_user})" if sudo_user else "")


def command_text(attempt: str) -> str:
    """A command name as logged ("search", "evidence export"): lower-case letters, digits,
    spaces and dashes only, at most 40 characters."""
    return _clean(attempt, "abcdefghijklmnopqrstuvwxyz0123456789 -", 40).strip()


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
        """Create a user. `by` must be an administrator, except for the very first user (bootstrap).

        The gate comes first (an administrator's role and standing; for the first user, that no
        user exists yet), then the new user's details; every refusal is logged.
        """
        query = {"user": name, "role": role, "trained_until_ns": trained_until_ns}
        if by is None:
            self.refuse_bootstrap_if_users_exist()
            problem = self._new_user_problem(name, role, password)
            if problem is not None:
                self.refuse_without_login("users", "users add", problem[0])
                raise problem[1]
        else:
            def problem() -> HQError | None:
                found = self._new_user_problem(name, role, password, existing=True)
                return None if found is None else found[1]

            # Outside the transaction below: a refusal is logged, and a rollback would undo that.
            self.require_role(by, "users", query=query, check=problem)
        with self.db.transaction(lock="users"):
            # Checked again under the lock: another command may have added the user (or the
            # first administrator) since. Raised without a log row: the rollback would undo it.
            if by is None and self.has_users():
                raise AccessDenied("users exist already: an administrator must add users")
            if self.db.value("SELECT 1 FROM users WHERE name=?", (name,)):
                raise PolicyError(f"user {name!r} exists already")
            creator = "bootstrap" if by is None else by.name
            self.db.execute("INSERT INTO users (name, role, password_hash, trained_until_ns, active, created_ns, "
                            "created_by) VALUES (?,?,?,?,1,?,?)",
                            (name, role, self.hasher.hash(password), trained_until_ns, self.clock(), creator))
            self.log.append(user=creator, role=by.role if by else "bootstrap", action="user-add", purpose="administration",
                            query=query)
        return self.user(name)

    def _new_user_problem(self, name: str, role: str, password: str,
                          existing: bool = False) -> tuple[str, PolicyError] | None:
        """Why these details cannot make a user: (key of NO_LOGIN_REASONS for a bootstrap row,
        the error), or None. With `existing`, a name already taken is a problem too."""
        if role not in ROLES:
            return "first-user-role", PolicyError(f"role {role!r}: must be one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            return "first-user-password", PolicyError(f"password: at least {MIN_PASSWORD} characters")
        bad_name = name_problem(name)
        if bad_name is not None:
            return "first-user-name", PolicyError(f"user name {name!r}: {bad_name}")
        if name in RESERVED_NAMES:
            return "first-user-name", PolicyError(f"user name {name!r} is reserved (the access log uses it for "
                                                  "HQ itself)")
        if existing and self.db.value("SELECT 1 FROM users WHERE name=?", (name,)):
            return "first-user-name", PolicyError(f"user {name!r} exists already")
        if role != "administrator" and not self.has_users():
            return "first-user-role", PolicyError("the first user must be an administrator")
        return None

    def refuse_bootstrap_if_users_exist(self) -> None:
        """AccessDenied, logged under the OS account, when users exist: creating "the first
        administrator" without a login is allowed only while there are none."""
        if self.has_users():
            self.refuse_without_login("users", "users add", "users-exist")
            raise AccessDenied("users exist already: an administrator must add users")

    def refuse_without_login(self, action: str, attempt: str, reason: str, *, login_as: str = "") -> None:
        """Record an attempt by someone not logged in to HQ as a denied row naming the OS
        account (`os_account()`, role "none"), the command and a fixed reason.

        `action` is one of NO_LOGIN_ACTIONS and `reason` a key of NO_LOGIN_REASONS: the row
        holds only fixed text, the command's name (letters, digits, spaces, dashes) and, for
        a login, the user name tried if it is one HQ could have (else it is left out).
        """
        if action not in NO_LOGIN_ACTIONS or reason not in NO_LOGIN_REASONS:
            raise PolicyError(f"no-login refusal {action!r}/{reason!r}: not one HQ records")
        query: dict[str, str] = {"command": command_text(attempt)}
        if _name_allowed(login_as):
            query["login_as"] = login_as
        self.log.append(user=os_account(), role=NOT_LOGGED_IN, action=action, outcome="denied", purpose="",
                        query=query, detail=NO_LOGIN_REASONS[reason])

    def user(self, name: str) -> User:
        row = self.db.one("SELECT name, role, trained_until_ns, active FROM users WHERE name=?", (name,))
        if row is None:
            raise NotFound(f"user {name!r}: no such user")
        return User(row[0], row[1], row[2], bool(row[3]))

    def users(self) -> list[User]:
        return [User(r[0], r[1], r[2], bool(r[3]))
                for r in self.db.rows("SELECT name, role, trained_until_ns, active FROM users ORDER BY name")]

    def set_training(self, by: Actor, name: str, trained_until_ns: int | None) -> None:
        """Record when a user's ALPR training expires (None: no training on file). Not one's
        own: another administrator records it (a logged refusal otherwise)."""
        def problem() -> HQError | None:
            unknown = self._unknown_user(name)
            if unknown is not None:
                return unknown
            if name == by.name:
                # Training is what lets a user at the data; an administrator who could certify
                # themselves would need nobody else, as with reviewing their own release request.
                return PolicyError(f"users training {name!r}: an administrator may not record their own "
                                   "training; another administrator must")
            return None

        self.require_role(by, "users", query={"user": name, "trained_until_ns": trained_until_ns}, check=problem)
        with self.db.transaction():
            self.db.execute("UPDATE users SET trained_until_ns=? WHERE name=?", (trained_until_ns, name))
            self.log.append(user=by.name, role=by.role, action="user-training", purpose="administration",
                            query={"user": name, "trained_until_ns": trained_until_ns})

    def set_active(self, by: Actor, name: str, active: bool) -> None:
        """Disable (or re-enable) a user; disabling also ends their sessions."""
        self.require_role(by, "users", query={"user": name, "active": active}, check=lambda: self._unknown_user(name))
        with self.db.transaction():
            self.db.execute("UPDATE users SET active=? WHERE name=?", (int(active), name))
            if not active:
                self.db.execute("UPDATE sessions SET ended_ns=? WHERE user_name=? AND ended_ns IS NULL",
                                (self.clock(), name))
            self.log.append(user=by.name, role=by.role, action="user-enable" if active else "user-disable",
                            purpose="administration", query={"user": name})

    def set_password(self, by: Actor, name: str, password: str) -> None:
        """Change a password: one's own, or anyone's for an administrator."""
        # An administrator changing a password manages users (allowed with lapsed training);
        # anyone else changing their own is a logged-in action like the rest.
        def problem() -> HQError | None:
            if len(password) < MIN_PASSWORD:
                return PolicyError(f"password: at least {MIN_PASSWORD} characters")
            return self._unknown_user(name)

        self.require_role(by, "users" if by.name != name or by.role == "administrator" else "passwd",
                          query={"user": name}, check=problem)
        with self.db.transaction():
            self.db.execute("UPDATE users SET password_hash=? WHERE name=?", (self.hasher.hash(password), name))
            self.log.append(user=by.name, role=by.role, action="user-password", purpose="administration",
                            query={"user": name})

    def _unknown_user(self, name: str) -> NotFound | None:
        if self.db.value("SELECT 1 FROM users WHERE name=?", (name,)) is None:
            return NotFound(f"user {name!r}: no such user")
        return None

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
            if row is None:
                # No such user: what was typed is not a name HQ knows, so it goes in only if it
                # could be one (the login_as rule), never as the row's user: no chosen text.
                query = {"login_as": name} if _name_allowed(name) else None
                self.log.append(user=os_account(), role=NOT_LOGGED_IN, action="login", outcome="denied",
                                purpose="login", query=query, detail="bad user name or password")
            else:
                self.log.append(user=name, role=row[0], action="login", outcome="denied",
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

    def session(self, token: str, *, attempt: str = "") -> Actor:
        """The user of a live session; AccessDenied if unknown, ended or expired, or the user is
        disabled. A refusal is logged (action "session", the user when the token names one, the
        reason, and the command attempted)."""
        row = self.db.one("SELECT s.user_name, s.expires_ns, s.ended_ns, u.role, u.active FROM sessions s "
                          "JOIN users u ON u.name = s.user_name WHERE s.token_sha256=?", (_token_hash(token),))
        reason = None
        if row is None:
            reason = "session is not valid (unknown token): log in again"
        elif row[2] is not None:
            reason = "session is not valid (logged out or ended): log in again"
        elif row[1] <= self.clock():
            reason = "session expired: log in again"
        elif not row[4]:
            reason = f"user {row[0]!r} is disabled"
        if reason is not None:
            self.log.append(user=row[0] if row else "unknown", role=row[3] if row else "unknown", action="session",
                            outcome="denied", purpose="", query={"command": command_text(attempt)} if attempt else None,
                            detail=reason)
            raise AccessDenied(reason)
        return Actor(row[0], row[3])

    def logout(self, token: str) -> None:
        """End a session (safe on an unknown or ended one)."""
        self.db.execute("UPDATE sessions SET ended_ns=? WHERE token_sha256=? AND ended_ns IS NULL",
                        (self.clock(), _token_hash(token)))

    # -- the gate ---------------------------------------------------------------------------
    def _standing(self, actor: Actor, action: str) -> str | None:
        """Why this user may not act at all right now (disabled, training), or None."""
        if actor is SYSTEM:
            return None  # the scheduled job has no user record and no training to lapse
        row = self.db.one("SELECT trained_until_ns, active FROM users WHERE name=?", (actor.name,))
        if row is None or not row[1]:
            return f"user {actor.name!r} is unknown or disabled"
        if action in TRAINING_EXEMPT:
            return None
        if row[0] is None:
            return f"user {actor.name!r} has no ALPR training on file"
        if row[0] <= self.clock():
            return f"user {actor.name!r}: ALPR training expired"
        return None

    def _refusal(self, actor: Actor, action: str) -> str | None:
        """Role, then standing: why the actor may not take this action, or None."""
        if action not in PERMISSIONS:
            raise PolicyError(f"unknown action {action!r}")
        if actor.role not in PERMISSIONS[action]:
            return f"role {actor.role} may not {action}"
        return self._standing(actor, action)

    def _deny(self, actor: Actor, action: str, reason: str, *, purpose: str = "", case_no: str = "",
              query: Mapping[str, Any] | None = None) -> None:
        self.log.append(user=actor.name, role=actor.role, action=action, outcome="denied", purpose=purpose,
                        case_no=case_no, query=query, detail=reason)

    def require_role(self, actor: Actor, action: str, *, query: Mapping[str, Any] | None = None,
                     check: Callable[[], HQError | None] | None = None) -> None:
        """AccessDenied unless the actor's role has the permission and the user is active and
        trained (except TRAINING_EXEMPT actions); for actions without a purpose. A refusal is
        logged; an allowed check is not: the action logs itself where it changes anything, and
        a command that only reads uses `permit`, which logs the allowed attempt too.

        Then `check`, if given, runs (only for an actor who passed, as in `authorize`): the
        input's own conditions. The error it returns is logged as a refusal and raised.
        """
        reason = self._refusal(actor, action)
        if reason is not None:
            self._deny(actor, action, reason, query=query)
            if reason.startswith("role "):
                raise AccessDenied(f"user {actor.name!r} ({actor.role}) may not {action}")
            raise AccessDenied(f"{action} refused: {reason}")
        problem = check() if check is not None else None
        if problem is not None:
            self._deny(actor, action, str(problem), query=query)
            raise problem

    def permit(self, actor: Actor, action: str, *, purpose: str, query: Mapping[str, Any] | None = None,
               check: Callable[[], HQError | None] | None = None) -> Grant:
        """`require_role` for a command that changes nothing but reads what the action covers
        (`users list`, `release list`, `audit verify`, `retention status`): refusals are logged
        as there, and an allowed attempt is one row too (outcome ok, `purpose` a fixed text
        naming the command), since every attempt, allowed or refused, is in the access log."""
        self.require_role(actor, action, query=query, check=check)
        entry = self.log.append(user=actor.name, role=actor.role, action=action, purpose=purpose, query=query)
        return Grant(actor, action, purpose, "", entry.id)

    def authorize(self, actor: Actor, action: str, *, purpose: str, case_no: str = "",
                  query: Mapping[str, Any] | None = None,
                  check: Callable[[], HQError | None] | None = None, purpose_option: str = "--purpose") -> Grant:
        """Allow one access or refuse it; either way the attempt is one row in the access log.

        Refusals: unknown action, role without the permission, user disabled, training missing
        or expired (every action but TRAINING_EXEMPT), no purpose, no case number where the
        action needs one. Then `check`, if given, runs: the caller's own conditions (a request
        that is not approved, an id that is not an alert ...). It runs only for an actor who
        passed the gate, so a refused user learns nothing from it; the error it returns is
        logged as the refusal's reason and raised. Put every check of the caller's input there
        (or pass the error to `refuse`): a refusal before the gate would leave no row and tell
        a user without rights how input is checked. `purpose_option` names the option that
        gives the purpose, for the refusal without one (e.g. "--why" for a hold).
        """
        purpose = (purpose or "").strip()
        case_no = (case_no or "").strip()
        reason = self._refusal(actor, action)
        if reason is None and not purpose:
            reason = f"a purpose is required ({purpose_option})"
        if reason is None and action in CASE_ACTIONS and not case_no:
            reason = f"{action} requires a case number (--case)"
        if reason is not None:
            self._deny(actor, action, reason, purpose=purpose, case_no=case_no, query=query)
            raise AccessDenied(f"{action} refused: {reason}")
        problem = check() if check is not None else None
        if problem is not None:
            self._deny(actor, action, str(problem), purpose=purpose, case_no=case_no, query=query)
            raise problem
        entry = self.log.append(user=actor.name, role=actor.role, action=action, purpose=purpose, case_no=case_no,
                                query=query)
        return Grant(actor, action, purpose, case_no, entry.id)

    def refuse(self, actor: Actor, action: str, problem: HQError, *, purpose: str | None = None,
               case_no: str = "", query: Mapping[str, Any] | None = None) -> NoReturn:
        """Refuse an attempt whose input was found unusable before it reached the action's own
        code (e.g. a date option that does not parse): the gate still comes first.

        A user the gate refuses gets (and the log records) that refusal, learning nothing about
        the input; anyone else gets `problem`, logged with its reason. `purpose` None: an action
        without a purpose (checked like `require_role`); otherwise as `authorize`.
        """
        if purpose is None:
            self.require_role(actor, action, query=query, check=lambda: problem)
        else:
            self.authorize(actor, action, purpose=purpose, case_no=case_no, query=query, check=lambda: problem)
        raise problem  # not reached: both calls above raise (the gate's refusal, or `problem`)

    @contextmanager
    def refusing(self, actor: Actor, action: str, *, purpose: str | None = None, case_no: str = "",
                 query: Mapping[str, Any] | None = None) -> Iterator[None]:
        """Run input parsing inside `with`; a PolicyError it raises goes through `refuse`."""
        problem: PolicyError | None = None
        try:
            yield
        except PolicyError as exc:
            problem = exc
        # Outside the except block, so the gate's refusal is not chained to the input error
        # (a traceback would show the refused user how the input was checked).
        if problem is not None:
            self.refuse(actor, action, problem, purpose=purpose, case_no=case_no, query=query)

    def withdraw(self, grant: Grant, problem: HQError, *, query: Mapping[str, Any] | None = None) -> NoReturn:
        """Refuse an access that was granted but could not be carried out, because the record
        changed between the check and the write (e.g. another administrator reviewed the same
        request first): logged as a refusal under the grant's action, purpose and case, with
        the reason, then `problem` is raised. Call it outside the write's transaction, whose
        rollback would undo the row."""
        self._deny(grant.actor, grant.action, str(problem), purpose=grant.purpose, case_no=grant.case_no,
                   query={"grant": grant.log_id, **(query or {})})
        raise problem

    def recheck(self, grant: Grant, *, token: str | None = None, login_ns: int | None = None) -> None:
        """Re-check a long-running access (e.g. `reads tail`) before it shows more data.

        With a session `token`: the session must still be live (not logged out, not expired,
        user not disabled). Without one (a password login for one command), the login counts
        as a session of `session_hours` from `login_ns`. Then the role and the user's standing
        (active, training) are checked again. A refusal is logged under the grant's action,
        purpose and case, and raised as AccessDenied.
        """
        actor = grant.actor
        if token is not None:
            actor = self.session(token, attempt=grant.action)
        reason = None
        if token is None and login_ns is not None and login_ns + self.session_ns <= self.clock():
            reason = (f"the login for this command is older than the session limit "
                      f"({self.session_ns / 3.6e12:g} h): log in again")
        if reason is None and actor != grant.actor:
            reason = f"the session now belongs to {actor.name!r}, not {grant.actor.name!r}"
        if reason is None:
            reason = self._refusal(actor, grant.action)
        if reason is not None:
            self._deny(grant.actor, grant.action, reason, purpose=grant.purpose, case_no=grant.case_no,
                       query={"recheck_of": grant.log_id})
            raise AccessDenied(f"{grant.action} stopped: {reason}")

    def record(self, grant: Grant, action: str, *, query: Mapping[str, Any] | None = None, detail: str = "") -> None:
        """Record a follow-up access under an existing grant (e.g. each image written by a search)."""
        self.log.append(user=grant.actor.name, role=grant.actor.role, action=action, purpose=grant.purpose,
                        case_no=grant.case_no, query=query, detail=detail)
