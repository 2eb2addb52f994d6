"""`alpr-hq` commands of the records system: users, login, search, reads, alerts, hot lists,
evidence, releases, retention and audit. `hq.cli` calls `register(subparsers)`.

Every command that reads ALPR information asks who (--user, or a session from `alpr-hq
login`) and why (--purpose, --case); the answer goes into the access log before any data
is read. Order in every command that needs a login: who (the session or password; without
either the attempt is logged under the OS account), then the access gate, then the input
(dates, ids, patterns ...): an input refusal is logged too, and only a user who passed the
gate sees it (`Access.refusing` / `Access.refuse` for what the command line parses itself).
"""
from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hq import config as hq_config
from hq.db import MAX_INT64
from hq.errors import (
    AccessDenied,
    BadConfig,
    HQError,
    NotFound,
    PolicyError,
    StoreError,
)
from transport import atomic

if TYPE_CHECKING:  # hq.access (and argon2) are imported only by the commands that use them
    from hq.access import Actor

_SUDO_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def default_session_path(environ: Mapping[str, str] = os.environ, euid: int | None = None,
                         home: Path | None = None) -> Path:
    """$ALPR_HQ_SESSION, else the session file of the person at the keyboard.

    HQ's commands run under sudo (hq.toml and the keys are root's), where `~` is root's home for
    everyone: one ~/.config/alpr-hq/session would be every operator's, and bob's search would be
    logged under the name alice logged in with. Under sudo the default is therefore one file per
    invoking user ($SUDO_USER): ~/.config/alpr-hq/sessions/NAME."""
    if environ.get("ALPR_HQ_SESSION"):
        return Path(environ["ALPR_HQ_SESSION"])
    base = (home or Path.home()) / ".config" / "alpr-hq"
    sudo_user = environ.get("SUDO_USER", "")
    uid = os.geteuid() if euid is None else euid
    if uid == 0 and sudo_user and sudo_user != "root" and _SUDO_USER.fullmatch(sudo_user):
        return base / "sessions" / sudo_user
    return base / "session"



# -- helpers --------------------------------------------------------------------------------
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# A full ISO 8601 time: date, T (or a space), hours and minutes at least, optional seconds,
# fraction and offset. Anything shorter or in another form (20250301, 2025-03, 2025-W09) is
# refused rather than guessed at: Python would read 20250301 as an instant, not a day.
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?")


def parse_time(text: str, *, end: bool = False, option: str = "time") -> int:
    """`YYYY-MM-DD` (the start of that UTC day, or of the next day with end=True) or a full
    ISO 8601 time (UTC unless it carries an offset); PolicyError naming `option` otherwise."""
    hint = "use YYYY-MM-DD (a UTC day) or a full ISO 8601 time YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM]"
    if not (_DAY.fullmatch(text) or _INSTANT.fullmatch(text)):
        raise PolicyError(f"{option} {text!r}: {hint}")
    try:
        if _DAY.fullmatch(text):
            day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
            t_ns = int((day + dt.timedelta(days=1 if end else 0)).timestamp()) * 10**9
        else:
            when = dt.datetime.fromisoformat(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            # Whole microseconds, not float seconds: a float would shift a bound by a few hundred ns.
            t_ns = (when - _EPOCH) // dt.timedelta(microseconds=1) * 1000
    except (ValueError, OverflowError) as exc:  # the right shape, but e.g. month 13, 25 o'clock, 9999-12-31 + 1 day
        raise PolicyError(f"{option} {text!r}: {exc}; {hint}") from exc
    # Times are stored as signed 64-bit nanoseconds (SQLite INTEGER, PostgreSQL BIGINT): past
    # 2262-04-11 SQLite fails and PostgreSQL refuses, after the access was already logged.
    if not 0 <= t_ns <= MAX_INT64:
        raise PolicyError(f"{option} {text!r}: outside the times HQ can store (1970-01-01 to 2262-04-11 UTC)")
    return t_ns


def fmt_ns(t_ns: int | None) -> str:
    if t_ns is None:
        return "-"
    return dt.datetime.fromtimestamp(t_ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_until(t_ns: int | None) -> str:
    """An end given as a day (stored as the next midnight, UTC) as that day: `through 2027-12-01
    (UTC)`, not `2027-12-02 00:00:00Z`, which reads as a day too many; other ends as a time."""
    if t_ns is None:
        return "none"
    when = dt.datetime.fromtimestamp(t_ns / 1e9, tz=dt.UTC)
    if t_ns % (86_400 * 10**9) == 0:
        return f"through {(when - dt.timedelta(days=1)).strftime('%Y-%m-%d')} (UTC)"
    return f"until {when.strftime('%Y-%m-%d %H:%M:%SZ')}"


class Context:
    """What one command needs: the configuration, the store and the access gate; closed at the end."""

    def __init__(self, args: argparse.Namespace) -> None:
        from hq.access import Access
        from hq.store import open_store

        self.args = args
        self.cfg = hq_config.load(args.config)
        self.store = open_store(self.cfg)
        self.access = Access(self.store.db, session_hours=self.cfg.records.session_hours)

    def close(self) -> None:
        self.store.close()

    def password(self, prompt: str = "Password: ") -> str:
        """The --user's password (option, $ALPR_HQ_PASSWORD or prompt); AccessDenied, logged
        under the OS account, when there is none."""
        if getattr(self.args, "password", None):
            return self.args.password
        if os.environ.get("ALPR_HQ_PASSWORD"):
            return os.environ["ALPR_HQ_PASSWORD"]
        if sys.stdin.isatty():
            return getpass.getpass(prompt)
        # Nobody logged in yet, so no HQ user to name: the OS account is who tried.
        self.access.refuse_without_login("login", command_name(self.args), "no-password",
                                         login_as=getattr(self.args, "user", None) or "")
        raise AccessDenied("no password: give --password, set ALPR_HQ_PASSWORD, or run on a terminal")

    def token(self) -> str | None:
        """The session token (None with --user: a password login for this command). Without a
        readable session file the attempt is refused and logged under the OS account."""
        if getattr(self.args, "user", None):
            return None
        path = Path(self.args.session)
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            self.access.refuse_without_login("session", command_name(self.args), "no-session")
            raise AccessDenied(f"{path}: no session; run `alpr-hq login --user NAME` or give --user") from None
        except (OSError, UnicodeDecodeError) as exc:  # a folder, no permission, not text
            self.access.refuse_without_login("session", command_name(self.args), "session-unreadable")
            raise AccessDenied(f"{path}: cannot read the session file ({exc.__class__.__name__}); "
                               "run `alpr-hq login --user NAME` or give --user") from None

    def actor(self):
        """The user: --user (with a password) or the session token file."""
        token = self.token()
        if token is None:
            return self.access.authenticate(self.args.user, self.password(f"Password for {self.args.user}: "))
        return self.access.session(token, attempt=command_name(self.args))

    def why(self) -> dict[str, str]:
        """--purpose and --case as `Access.authorize` takes them."""
        return {"purpose": self.args.purpose or "", "case_no": self.args.case or ""}

    @contextmanager
    def refusing(self, actor: Actor, action: str, query: dict[str, Any], *, why: bool = True) -> Iterator[None]:
        """Parse command-line input inside `with`: a PolicyError is refused after the gate for
        `action` (with this command's purpose and case when `why`), and logged."""
        with self.access.refusing(actor, action, query={k: v for k, v in query.items() if v is not None},
                                  **(self.why() if why else {})):
            yield

    def registry(self):
        from transport.registry import Registry

        path = self.cfg.hq.data_dir / "registry.db"
        if not path.exists():
            raise BadConfig(f"{path}: node registry not found (alpr-provision writes it)")
        return Registry(path)

    def sign_key(self):
        from hq.keyring import load_sign_key

        return load_sign_key(self.cfg.hq.data_dir / "keys")


def command_name(args: argparse.Namespace) -> str:
    """The command as typed, e.g. "search" or "evidence export" (for refusals in the access log)."""
    words = [getattr(args, "command", None) or ""]
    sub = getattr(args, f"{words[0]}_command", None)
    if sub:
        words.append(sub)
    return " ".join(w for w in words if w)


def _database_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error]
    try:
        import psycopg
    except ImportError:
        pass
    else:
        errors.append(psycopg.Error)
    return tuple(errors)


def _run(func: Callable[[Context], int]) -> Callable[[argparse.Namespace], int]:
    def runner(args: argparse.Namespace) -> int:
        ctx = Context(args)
        try:
            return func(ctx)
        except _database_errors() as exc:  # e.g. locked, disk full, server gone: say where
            raise StoreError(f"{ctx.store.db.where}: {exc}") from exc
        finally:
            ctx.close()
    return runner


def _who(p: argparse.ArgumentParser, why: bool = True, case_required: bool = False) -> None:
    g = p.add_argument_group("who and why (recorded in the access log)")
    g.add_argument("--user", help="log in as this user for this command (password prompted or $ALPR_HQ_PASSWORD)")
    g.add_argument("--password", help=argparse.SUPPRESS)  # for scripts and tests; prefer the prompt or env
    # Resolved when the parser is built, not at import: $ALPR_HQ_SESSION and $SUDO_USER are read
    # for this command, not frozen at whatever they were when the module was first imported.
    session = default_session_path()
    g.add_argument("--session", type=Path, default=session, help=f"session token file (default {session})")
    if why:
        g.add_argument("--purpose", required=True, help="why you need this data")
        g.add_argument("--case", required=case_required, default="", help="case or incident number")


def add_who_arguments(parser: argparse.ArgumentParser, why: bool = True) -> None:
    """--user/--session (and with `why`, the required --purpose and --case) for a command defined
    elsewhere (e.g. `reads tail`)."""
    _who(parser, why=why)


def authorize_from_args(args: argparse.Namespace, action: str, query: dict[str, Any]) -> None:
    """Gate and log one access for a command defined elsewhere; AccessDenied if refused."""
    ctx = Context(args)
    try:
        ctx.access.authorize(ctx.actor(), action, query=query, **ctx.why())
    finally:
        ctx.close()


class Watch:
    """A long-running access for a command defined elsewhere (`reads tail`): authorised and
    logged once at the start, then `check()` before showing more data, which refuses (logged)
    once the session has ended or expired, the user is disabled or their training lapsed.
    `store` is the command's store; `close()` closes it."""

    def __init__(self, args: argparse.Namespace, action: str, query: dict[str, Any]) -> None:
        self._ctx = Context(args)
        try:
            self._token = self._ctx.token()
            self.grant = self._ctx.access.authorize(self._ctx.actor(), action, query=query, **self._ctx.why())
            self._login_ns = self._ctx.access.clock()
        except BaseException:
            self._ctx.close()
            raise
        self.store = self._ctx.store

    def check(self) -> None:
        """AccessDenied (logged) if the access may not go on."""
        self._ctx.access.recheck(self.grant, token=self._token, login_ns=self._login_ns)

    def close(self) -> None:
        self._ctx.close()


def _out(args: argparse.Namespace, value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


# -- users and sessions -------------------------------------------------------------------------
def _new_user_inputs(ctx: Context) -> tuple[str, int | None]:
    """The new user's password and training expiry from the command line; PolicyError if unusable."""
    a = ctx.args
    new_password = os.environ.get("ALPR_HQ_NEW_PASSWORD") or (a.new_password or "")
    if not new_password:
        if not sys.stdin.isatty():
            raise PolicyError("no password for the new user: set ALPR_HQ_NEW_PASSWORD or run on a terminal")
        new_password = getpass.getpass(f"New password for {a.name}: ")
    trained = parse_time(a.trained_until, end=True, option="--trained-until") if a.trained_until else None
    return new_password, trained


def _users_add(ctx: Context) -> int:
    a = ctx.args
    if a.bootstrap:
        by = None
        # A bootstrap's gate: no user may exist yet (a refusal is logged under the OS account).
        ctx.access.refuse_bootstrap_if_users_exist()
        try:
            new_password, trained = _new_user_inputs(ctx)
        except PolicyError:
            # Logged with a fixed reason: someone not logged in must not put chosen text in the log.
            ctx.access.refuse_without_login("users", "users add", "first-user-input")
            raise
    else:
        by = ctx.actor()
        with ctx.refusing(by, "users", {"user": a.name, "role": a.role, "trained_until": a.trained_until},
                          why=False):
            new_password, trained = _new_user_inputs(ctx)
    user = ctx.access.add_user(by, a.name, a.role, new_password, trained)
    print(f"user {user.name} added ({user.role}, training {fmt_until(user.trained_until_ns)})")
    return 0


def _users_list(ctx: Context) -> int:
    ctx.access.permit(ctx.actor(), "users", purpose="list users")
    for u in ctx.access.users():
        print(f"{u.name:<20} {u.role:<14} training {fmt_until(u.trained_until_ns)}  "
              f"{'active' if u.active else 'disabled'}")
    return 0


def _users_training(ctx: Context) -> int:
    actor = ctx.actor()
    with ctx.refusing(actor, "users", {"user": ctx.args.name, "until": ctx.args.until}, why=False):
        until = None if ctx.args.until == "none" else parse_time(ctx.args.until, end=True, option="--until")
    ctx.access.set_training(actor, ctx.args.name, until)
    print(f"user {ctx.args.name}: training {fmt_until(until)}")
    return 0


def _users_active(active: bool) -> Callable[[Context], int]:
    def run(ctx: Context) -> int:
        ctx.access.set_active(ctx.actor(), ctx.args.name, active)
        print(f"user {ctx.args.name} {'enabled' if active else 'disabled'}")
        return 0
    return run


def _users_passwd(ctx: Context) -> int:
    actor = ctx.actor()  # who first: nobody is asked for a new password before they are known
    new = os.environ.get("ALPR_HQ_NEW_PASSWORD") or getpass.getpass(f"New password for {ctx.args.name}: ")
    ctx.access.set_password(actor, ctx.args.name, new)
    print(f"password of {ctx.args.name} changed")
    return 0


def _login(ctx: Context) -> int:
    token = ctx.access.login(ctx.args.user, ctx.password(f"Password for {ctx.args.user}: "))
    path = Path(ctx.args.session)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh 0600 file renamed into place: opening the path itself would write the token
    # through a symlink or hard link planted there, or into an older file others can read.
    atomic.write_text(path, token + "\n", 0o600)
    print(f"logged in as {ctx.args.user}; session in {path}, valid {ctx.cfg.records.session_hours:g} h")
    return 0


def _logout(ctx: Context) -> int:
    path = Path(ctx.args.session)
    if path.exists():
        ctx.access.logout(path.read_text().strip())
        path.unlink()
    print("logged out")
    return 0


# -- data -------------------------------------------------------------------------------------------
def _search(ctx: Context) -> int:
    from hq.search import SearchQuery, search

    a = ctx.args
    actor = ctx.actor()
    with ctx.refusing(actor, "search", {"plate": a.plate, "from": a.since, "to": a.until}):
        since = parse_time(a.since, option="--from") if a.since else None
        until = parse_time(a.until, end=True, option="--to") if a.until else None
    query = SearchQuery(a.plate, confusable=a.confusable, since_ns=since, until_ns=until, site=a.site, limit=a.limit)
    hits = search(ctx.store, ctx.access, actor, query, crops_dir=a.crops, **ctx.why())
    if a.json:
        _out(a, [{"match": h.match, **h.row.__dict__} for h in hits])
    else:
        for h in hits:
            r = h.row
            print(f"{r.id:>10}  {fmt_ns(r.capture_ns)}  {r.plate:<10} {h.match:<10} {r.confidence:5.1%}  "
                  f"site={r.site_id} cam={r.camera_id} node={r.node_id} dir={r.direction} kind={r.kind}")
        print(f"{len(hits)} read(s)" + (f"; crops in {a.crops}" if a.crops else ""))
    return 0


def _reads_show(ctx: Context) -> int:
    from hq.search import crops_problem, write_crops

    a = ctx.args

    def problem() -> HQError | None:  # after the gate: only a user who may view learns whether the id exists
        if ctx.store.db.value("SELECT 1 FROM reads WHERE id=?", (a.id,)) is None:
            return NotFound(f"read {a.id}: not in the store (never stored, or purged)")
        return crops_problem(a.crops) if a.crops else None

    grant = ctx.access.authorize(ctx.actor(), "view", query={"read": a.id}, check=problem, **ctx.why())
    stored = ctx.store.read(a.id)
    _out(a, {**stored.row.__dict__, "payload_sha256": stored.payload_sha256.hex()})
    if a.crops:
        written = write_crops(ctx.store, ctx.access, grant, [a.id], a.crops)
        print(f"crop written: {', '.join(map(str, written)) or 'none (read has no crop)'}")
    return 0


def _alerts_list(ctx: Context) -> int:
    from hq.alerts import list_alerts

    a = ctx.args
    alerts = list_alerts(ctx.store, ctx.access, ctx.actor(), unverified_only=not a.all, limit=a.limit, **ctx.why())
    for al in alerts:
        r = al.row
        print(f"{r.id:>10}  {fmt_ns(r.capture_ns)}  {r.plate:<10} {al.status.upper():<14} site={r.site_id} "
              f"node={r.node_id} match={json.dumps(al.hotlist, sort_keys=True)}"
              + (f" by={al.verified_by} note={al.note!r}" if al.verified_by else ""))
    print(f"{len(alerts)} alert(s). UNVERIFIED alerts must be confirmed through CLETS before any enforcement action.")
    return 0


def _alerts_verify(ctx: Context) -> int:
    from hq.alerts import verify_alert

    a = ctx.args
    al = verify_alert(ctx.store, ctx.access, ctx.actor(), a.id, outcome=a.outcome, note=a.note, case_no=a.case)
    print(f"alert {a.id}: {al.status} (by {al.verified_by})")
    return 0


def _hotlist_add(ctx: Context) -> int:
    from hq import hotlist

    a = ctx.args
    actor = ctx.actor()
    with ctx.refusing(actor, "hotlist-edit", {"add": a.plate, "expires": a.expires}):
        expires_ns = parse_time(a.expires, end=True, option="--expires")
    e = hotlist.add_entry(ctx.store, ctx.access, actor, plate=a.plate, reason=a.reason, source=a.source,
                          expires_ns=expires_ns, note=a.note, **ctx.why())
    print(f"hot-list entry {e.id}: {e.plate} ({e.reason}, source {e.source}) until {fmt_ns(e.expires_ns)}")
    return 0


def _hotlist_list(ctx: Context) -> int:
    from hq import hotlist

    ctx.access.authorize(ctx.actor(), "hotlist-view", query={"list": "active"}, **ctx.why())
    for e in hotlist.active_entries(ctx.store, ctx.access.clock()):
        print(f"{e.id:>6}  {e.plate:<10} {'pattern' if e.is_pattern else 'exact':<8} {e.reason:<15} "
              f"source={e.source} until={fmt_ns(e.expires_ns)} by={e.entered_by}")
    return 0


def _hotlist_show(ctx: Context) -> int:
    from hq import hotlist

    e = hotlist.show_entry(ctx.store, ctx.access, ctx.actor(), ctx.args.id, **ctx.why())
    state = e.state(ctx.access.clock())
    print(f"hot-list entry {e.id}: {e.plate} ({'pattern' if e.is_pattern else 'exact'})")
    print(f"  reason   {e.reason}")
    print(f"  source   {e.source}")
    print(f"  entered  {fmt_ns(e.entered_ns)} by {e.entered_by}")
    print(f"  expires  {fmt_ns(e.expires_ns)}")
    print(f"  state    {state.upper()}" + (f" {fmt_ns(e.removed_ns)} by {e.removed_by}" if state == "removed" else ""))
    if e.note:
        print(f"  note     {e.note}")
    return 0


def _hotlist_remove(ctx: Context) -> int:
    from hq import hotlist

    hotlist.remove_entry(ctx.store, ctx.access, ctx.actor(), ctx.args.id, purpose=ctx.args.purpose)
    print(f"hot-list entry {ctx.args.id} removed")
    return 0


def _hotlist_publish(ctx: Context) -> int:
    from hq import hotlist

    actor = ctx.actor()
    # The key after the login, and a missing one refused after the gate (logged): only someone
    # who may publish learns about HQ's key files.
    try:
        sign_key = ctx.sign_key()
    except BadConfig as exc:
        ctx.access.refuse(actor, "hotlist-publish", exc, purpose=ctx.args.purpose, query={"out": str(ctx.args.out)})
    compiled = hotlist.publish(ctx.store, ctx.access, actor, sign_key, purpose=ctx.args.purpose,
                               valid_hours=ctx.cfg.records.hotlist_valid_hours)
    # The message holds the list's HMAC key and its patterns in clear: a fresh 0600 file renamed
    # into place, never written through a link planted at --out or into an older, wider file.
    atomic.write_bytes(ctx.args.out, compiled.message, 0o600)
    print(f"hot list version {compiled.version}: {len(compiled.body['exact'])} exact, "
          f"{len(compiled.body['patterns'])} patterns; signed message in {ctx.args.out}")
    return 0


# -- evidence, releases, retention, audit -----------------------------------------------------------
def _hold(ctx: Context) -> int:
    from hq import retention

    a = ctx.args
    h = retention.place_hold(ctx.store, ctx.access, ctx.actor(), case_no=a.case, reason=a.why, read_ids=a.read)
    print(f"hold {h.id} on {len(h.read_ids)} read(s) for case {h.case_no}")
    return 0


def _holds(ctx: Context) -> int:
    from hq import retention

    ctx.access.authorize(ctx.actor(), "hold-list", query={"list": ctx.args.case or "all"}, **ctx.why())
    for h in retention.holds(ctx.store, ctx.args.case or None):
        state = "active" if h.released_ns is None else f"released {fmt_ns(h.released_ns)}"
        print(f"{h.id:>6}  case={h.case_no} reads={len(h.read_ids)} by={h.created_by} {fmt_ns(h.created_ns)} "
              f"{state}  why={h.reason!r}")
    return 0


def _release_hold(ctx: Context) -> int:
    from hq import retention

    h = retention.release_hold(ctx.store, ctx.access, ctx.actor(), ctx.args.id, note=ctx.args.note)
    print(f"hold {h.id} released")
    return 0


def _export(ctx: Context) -> int:
    from hq import evidence

    a = ctx.args
    actor = ctx.actor()
    # The registry and key after the login, and a missing one refused after the gate (logged):
    # only someone who may export learns about HQ's files.
    registry = None
    try:
        registry = ctx.registry()
        sign_key = ctx.sign_key()
    except BadConfig as exc:
        if registry is not None:
            registry.close()
        ctx.access.refuse(actor, "export", exc, purpose=f"release request {a.release}", case_no=a.case,
                          query={"release": a.release, "out": str(a.out)})
    try:
        result = evidence.export(ctx.store, ctx.access, actor, case_no=a.case, release_id=a.release, out=a.out,
                                 sign_key=sign_key, registry=registry,
                                 agency_name=a.agency_name or ctx.cfg.records.agency_name)
    finally:
        registry.close()
    print(f"evidence package for case {a.case}: {result.reads} read(s) in {result.directory}; "
          f"manifest sha256 {result.manifest_sha256}")
    return 0


# `evidence verify`: 0 verified with --hq-key, 1 a problem found, 2 an error (hq.cli),
# EXIT_UNVERIFIED no problem found but no trusted HQ key given, so nothing is proved.
EXIT_UNVERIFIED = 3


def _verify(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from hq import evidence
    from transport.keys import load_public_key

    trusted = load_public_key(args.hq_key, ed25519.Ed25519PublicKey) if args.hq_key else None
    ca = _load_ca_cert(args.ca_cert) if args.ca_cert else None
    check = evidence.verify_package(args.dir, trusted, expect_case=args.case, expect_release=args.release,
                                    trusted_ca=ca)
    for problem in check.problems:
        print(f"FAIL  {problem}")
    if not check.intact:
        status = 1
        print(f"FAILED  {len(check.problems)} problem(s): this package is not what HQ exported, or not for what "
              "was asked (--case, --release)")
    elif not check.ok:
        # The package agrees only with keys it carries itself: anyone can make such a package.
        status = EXIT_UNVERIFIED
        print(f"UNVERIFIED  {check.reads_checked} read(s) agree with the HQ key (key {check.hq_key_id}) and node keys "
              "the package carries itself, which anyone can make: nothing shows it came from HQ or the reads from "
              "a node. Give --hq-key with HQ's public key (hq-sign.pub) obtained separately.")
    else:
        status = 0
        print(f"OK  {check.reads_checked} read(s): files, node signatures and HQ signature verify with the trusted "
              f"HQ key (key {check.hq_key_id})")
    # Which package this was, as it states it (signed by HQ when OK): a stick labelled for one
    # case may hold another case's genuine package.
    for line in _package_lines(check.summary, checked=status == 0):
        print(line)
    for warning in check.warnings:
        print(f"WARN  {warning}")
    return status


def _load_ca_cert(path: Path) -> Any:
    """The CA certificate given with --ca-cert; HQError naming the file if it is not one."""
    from cryptography import x509

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise HQError(f"--ca-cert {path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise HQError(f"--ca-cert {path}: not a PEM certificate ({exc})") from exc


def _package_lines(summary: dict[str, Any], *, checked: bool) -> list[str]:
    """The package's case, release, approver, exporter, time and reads, for `evidence verify`."""
    if not summary:
        return []
    say = "" if checked else " (as the package states it; not verified)"
    reads = summary.get("reads") or []
    role = f" ({summary['created_by_role']})" if summary.get("created_by_role") else ""
    lines = [f"  package{say}:",
             f"    case             {summary.get('case')}",
             (f"    release request  {summary.get('release_request')} for {summary.get('agency')} "
              f"({summary.get('requester')}), approved by {summary.get('approved_by')}"),
             f"    exported by      {summary.get('created_by')}{role} at {summary.get('created_utc')} (UTC)",
             f"    reads            {len(reads)}: {', '.join(map(str, reads))}"]
    if summary.get("hq_name"):
        lines.insert(1, f"    issued by        {summary['hq_name']}")
    if summary.get("ca"):
        lines.append(f"    node keys        {summary.get('node_keys_attested')} of {summary.get('node_keys')} that "
                     f"signed these reads attested by {summary['ca']}")
    if summary.get("access_log_head"):
        lines.append(f"    access log head  {summary['access_log_head']} (check at HQ: alpr-hq audit verify "
                     f"--expect-head {summary['access_log_head']})")
    return lines


def _release_request(ctx: Context) -> int:
    from hq import releases

    a = ctx.args
    r = releases.request(ctx.store, ctx.access, ctx.actor(), case_no=a.case, agency=a.agency, requester=a.requester,
                         purpose=a.purpose)
    print(f"release request {r.id} filed for case {r.case_no} ({r.agency}); pending administrator review")
    return 0


def _release_review(ctx: Context) -> int:
    from hq import releases

    a = ctx.args
    r = releases.review(ctx.store, ctx.access, ctx.actor(), a.id, approve=a.approve, note=a.note)
    print(f"release request {r.id}: {r.status} by {r.reviewed_by}")
    return 0


def _release_list(ctx: Context) -> int:
    from hq import releases

    ctx.access.permit(ctx.actor(), "release-review", purpose="list release requests")
    for r in releases.all_requests(ctx.store):
        print(f"{r.id:>6}  case={r.case_no} agency={r.agency!r} requester={r.requester!r} {r.status} "
              f"filed by {r.requested_by} {fmt_ns(r.requested_ns)} reviewed by {r.reviewed_by or '-'}")
    return 0


def _retention_run(ctx: Context) -> int:
    from hq import retention
    from hq.access import SYSTEM

    configured = ctx.cfg.records.retention_days
    days = configured if ctx.args.min_days is None else ctx.args.min_days
    actor = SYSTEM if ctx.args.system else ctx.actor()
    # The configured period is the legal minimum: --min-days may lengthen it, never shorten it.
    # Refused after the gate (logged): only someone who may purge learns the floor.
    if days < configured:
        ctx.access.refuse(actor, "retention", PolicyError(
            f"--min-days {days}: below records.retention_days = {configured} in {ctx.args.config}; "
            "reads are kept at least the configured period (--min-days may only lengthen it)"),
            query={"min_days": days})
    # Ingest's set-aside messages (hq.cli: data_dir/rejected) hold reads too: the same cutoff applies.
    r = retention.purge(ctx.store, ctx.access, actor, min_days=days, retention_days=configured,
                        rejects_dir=ctx.cfg.hq.data_dir / "rejected")
    print(f"retention ({days} days): purged {r.reads_deleted} read(s) captured before {fmt_ns(r.cutoff_ns)}, "
          f"dropped {r.partitions_dropped} partition(s), kept {r.held_kept} under hold, "
          f"deleted {r.events_deleted} event(s) captured before then ({r.events_held} kept with held reads), "
          f"removed {r.set_aside_removed} set-aside message(s) received before then, {r.seconds:.2f} s")
    return 0


def _store_status(ctx: Context) -> int:
    from hq import migrations, partitions

    ctx.access.permit(ctx.actor(), "retention", purpose="store status")
    db = ctx.store.db
    oldest, newest = db.one("SELECT MIN(capture_ns), MAX(capture_ns) FROM reads") or (None, None)
    days = ctx.cfg.records.retention_days
    print(f"store: {db.where} ({db.dialect}), schema version {migrations.current_version(db)} "
          f"(this HQ: {migrations.LATEST})")
    print(f"reads: {ctx.store.count():,}, captured {fmt_ns(oldest)} .. {fmt_ns(newest)}; "
          f"conflicts kept aside: {ctx.store.conflicts()}")
    print(f"retention: {days} days; a run now purges reads captured before "
          f"{fmt_ns(partitions.retention_cutoff_ns(ctx.access.clock(), days))}")
    if db.postgres:
        print("partitions: " + " ".join(m.name for m in partitions.existing_partitions(db)))
    return 0


def parse_head(text: str) -> tuple[int, str]:
    """`ID:HASH` as `audit verify` prints it; PolicyError naming --expect-head otherwise."""
    entry, _, digest = text.strip().partition(":")
    digest = digest.lower()
    if not entry.isdigit() or int(entry) < 1 or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise PolicyError(f"--expect-head {text!r}: use ID:HASH as `alpr-hq audit verify` printed it "
                          "(entry number, colon, 64 hex digits)")
    return int(entry), digest


def _audit_verify(ctx: Context) -> int:
    actor = ctx.actor()
    with ctx.refusing(actor, "audit", {"expect_head": ctx.args.expect_head}, why=False):
        expect = parse_head(ctx.args.expect_head) if ctx.args.expect_head else None
    # Logged before the chain is checked, so the row is part of what is verified.
    ctx.access.permit(actor, "audit", purpose="verify access log",
                      query={"expect_head": ctx.args.expect_head} if ctx.args.expect_head else None)
    result = ctx.access.log.verify(expect_head=expect)
    for problem in result.problems:
        print(f"FAIL  {problem}")
    if result.ok:
        print(f"OK  {result.entries} entries" + (f"; entry {expect[0]} still has the hash noted earlier"
                                                 if expect else ""))
    # Printed on every run, good or bad: the auditor notes it outside HQ for the next verify.
    print(f"head {result.head_id}:{result.head_hash}")
    if result.ok:
        print("Keep this head outside HQ (audit ticket, e-mail, paper); next time run "
              f"`alpr-hq audit verify --expect-head {result.head_id}:{result.head_hash}`.")
    return 0 if result.ok else 1


def _audit_report(ctx: Context) -> int:
    from hq import report

    a = ctx.args
    actor = ctx.actor()
    with ctx.refusing(actor, "audit", {"from": a.since, "to": a.until}, why=False):
        since_ns = parse_time(a.since, option="--from")
        until_ns = parse_time(a.until, end=True, option="--to")
        if until_ns <= since_ns:  # as search: an empty period would print an empty, clean-looking report
            raise PolicyError("time range: --to must be after --from")
    registry = None
    path = ctx.cfg.hq.data_dir / "registry.db"
    if path.exists():
        registry = ctx.registry()
    try:
        doc = report.build(ctx.store, ctx.access, actor, since_ns=since_ns, until_ns=until_ns, registry=registry)
    finally:
        if registry is not None:
            registry.close()
    if a.json:
        _out(a, doc)
        return 0
    print(f"Audit report {fmt_ns(doc['from_ns'])} .. {fmt_ns(doc['to_ns'])}")
    print("\nAccesses per user (action | purpose: count)")
    for user, counts in doc["accesses_per_user"].items():
        for key, n in counts.items():
            print(f"  {user:<20} {key}: {n}")
    print(f"\nSearches without a case number: {len(doc['searches_without_case'])}")
    for s in doc["searches_without_case"]:
        print(f"  entry {s['id']} {fmt_ns(s['t_ns'])} {s['user']} purpose={s['purpose']!r}")
    print(f"\nRefused attempts: {len(doc['denied'])}")
    for d in doc["denied"]:
        print(f"  entry {d['id']} {fmt_ns(d['t_ns'])} {d['user']} {d['action']}: {d['why']}")
    print(f"\nRelease requests: {len(doc['releases'])}")
    for r in doc["releases"]:
        print(f"  {r['id']} case={r['case_no']} agency={r['agency']!r} {r['status']} reviewed by {r['reviewed_by']}")
    print(f"\nPurges: {len(doc['purges'])}")
    for p in doc["purges"]:
        print(f"  {fmt_ns(p['t_ns'])} by {p['by']}: {p['reads_deleted']} reads before {fmt_ns(p['cutoff_ns'])}, "
              f"{p['held_kept']} held kept")
    print(f"\nHolds: {len(doc['holds'])}")
    for h in doc["holds"]:
        print(f"  {h['id']} case={h['case']} reads={h['reads']} by {h['by']} released={fmt_ns(h['released_ns'])}")
    print(f"\nProvisioning events: {len(doc['provisioning'])}")
    for e in doc["provisioning"]:
        print(f"  {fmt_ns(e['t_ns'])} {e['actor']} {e['action']} node={e['node']} {e['detail']}")
    chain = doc["access_log"]
    print(f"\nAccess log: {chain['entries']} entries, {'intact' if chain['intact'] else 'BROKEN'}; "
          f"head {chain['head_id']} {chain['head_hash']}")
    for problem in chain["problems"]:
        print(f"  FAIL {problem}")
    return 0


# -- registration ---------------------------------------------------------------------------------
def register(sub: Any) -> None:
    """Add the records commands to `alpr-hq`'s subparsers."""
    from hq.access import ROLES
    from hq.alerts import OUTCOMES
    from hq.hotlist import REASONS

    # users
    users = sub.add_parser("users", help="user accounts (administrators)").add_subparsers(dest="users_command",
                                                                                         required=True)
    p = users.add_parser("add", help="add a user (the first one with --bootstrap); password from the prompt "
                                     "or $ALPR_HQ_NEW_PASSWORD")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--trained-until", help="last day of valid ALPR training (YYYY-MM-DD, through that day UTC) or an ISO time; "
                   "none: no data access")
    p.add_argument("--bootstrap", action="store_true", help="create the first administrator (only when no users)")
    p.add_argument("--new-password", help=argparse.SUPPRESS)
    _who(p, why=False)
    p.set_defaults(func=_run(_users_add))
    p = users.add_parser("list", help="list users")
    _who(p, why=False)
    p.set_defaults(func=_run(_users_list))
    p = users.add_parser("training", help="record a user's training expiry")
    p.add_argument("name")
    p.add_argument("--until", required=True, help="last day of valid training (YYYY-MM-DD, through that day "
                   "UTC), an ISO time, or 'none'")
    _who(p, why=False)
    p.set_defaults(func=_run(_users_training))
    for name, active in (("disable", False), ("enable", True)):
        p = users.add_parser(name, help=f"{name} a user")
        p.add_argument("name")
        _who(p, why=False)
        p.set_defaults(func=_run(_users_active(active)))
    p = users.add_parser("passwd", help="change a password (new one from the prompt or $ALPR_HQ_NEW_PASSWORD)")
    p.add_argument("name")
    _who(p, why=False)
    p.set_defaults(func=_run(_users_passwd))

    p = sub.add_parser("login", help="start a session (token file, mode 0600)")
    p.add_argument("--user", required=True)
    p.add_argument("--password", help=argparse.SUPPRESS)
    p.add_argument("--session", type=Path, default=default_session_path())
    p.set_defaults(func=_run(_login))
    p = sub.add_parser("logout", help="end the session")
    p.add_argument("--session", type=Path, default=default_session_path())
    p.set_defaults(func=_run(_logout))

    # search and reads
    p = sub.add_parser("search", help="search reads by plate: exact, pattern (7AB?12*), --confusable")
    p.add_argument("plate", help="plate, or pattern with ? (one character) and * (any run)")
    p.add_argument("--confusable", action="store_true", help="also match OCR confusions (0/O/D/Q 1/I/7 8/B 5/S 2/Z)")
    p.add_argument("--from", dest="since", help="YYYY-MM-DD or ISO time (UTC)")
    p.add_argument("--to", dest="until", help="YYYY-MM-DD (inclusive) or ISO time")
    p.add_argument("--site")
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--crops", type=Path, help="write each hit's crop JPEG into this folder")
    p.add_argument("--json", action="store_true")
    _who(p)
    p.set_defaults(func=_run(_search))
    p = sub.add_parser("read", help="show one read (and write its crop with --crops DIR)")
    p.add_argument("id", type=int)
    p.add_argument("--crops", type=Path)
    _who(p)
    p.set_defaults(func=_run(_reads_show))

    # alerts
    alerts = sub.add_parser("alerts", help="hot-list alerts (unverified until confirmed through CLETS)"
                            ).add_subparsers(dest="alerts_command", required=True)
    p = alerts.add_parser("list", help="alerts not yet verified (--all: every alert)")
    p.add_argument("--all", action="store_true")
    p.add_argument("--limit", type=int, default=200)
    _who(p)
    p.set_defaults(func=_run(_alerts_list))
    p = alerts.add_parser("verify", help="record the CLETS outcome of an alert")
    p.add_argument("id", type=int)
    p.add_argument("--outcome", required=True, choices=OUTCOMES)
    p.add_argument("--note", required=True, help="what was checked, e.g. CLETS response reference")
    _who(p, why=False)
    p.add_argument("--case", default="")
    p.set_defaults(func=_run(_alerts_verify))

    # hot lists
    hl = sub.add_parser("hotlist", help="hot-list entries and signed hot lists for nodes").add_subparsers(
        dest="hotlist_command", required=True)
    p = hl.add_parser("add", help="add a plate or pattern")
    p.add_argument("plate")
    p.add_argument("--reason", required=True, choices=REASONS)
    p.add_argument("--source", required=True, help="where the entry comes from (NCIC, SVS, case ...)")
    p.add_argument("--expires", required=True, help="YYYY-MM-DD")
    p.add_argument("--note", default="")
    _who(p)
    p.set_defaults(func=_run(_hotlist_add))
    p = hl.add_parser("list", help="active entries")
    _who(p)
    p.set_defaults(func=_run(_hotlist_list))
    p = hl.add_parser("show", help="one entry, also once removed or expired (e.g. the entry an alert names)")
    p.add_argument("id", type=int)
    _who(p)
    p.set_defaults(func=_run(_hotlist_show))
    p = hl.add_parser("remove", help="take an entry off the list")
    p.add_argument("id", type=int)
    _who(p)
    p.set_defaults(func=_run(_hotlist_remove))
    p = hl.add_parser("publish", help="compile and sign the next version for nodes")
    p.add_argument("--out", type=Path, required=True, help="write the signed message here")
    _who(p)
    p.set_defaults(func=_run(_hotlist_publish))

    # evidence
    ev = sub.add_parser("evidence", help="evidence holds, export and offline verification").add_subparsers(
        dest="evidence_command", required=True)
    p = ev.add_parser("hold", help="exempt reads from purging for a case")
    p.add_argument("--read", type=int, action="append", required=True, help="read id (repeat)")
    p.add_argument("--why", required=True)
    _who(p, why=False)
    p.add_argument("--case", required=True)
    p.set_defaults(func=_run(_hold))
    p = ev.add_parser("holds", help="list holds (all, or one case's with --case)")
    _who(p)
    p.set_defaults(func=_run(_holds))
    p = ev.add_parser("release-hold", help="end a hold")
    p.add_argument("id", type=int)
    p.add_argument("--note", required=True)
    _who(p, why=False)
    p.set_defaults(func=_run(_release_hold))
    p = ev.add_parser("export", help="write a case's held reads as a signed package (needs an approved release)")
    p.add_argument("--case", required=True)
    p.add_argument("--release", type=int, required=True, help="approved release request id")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--agency-name", help="the agency running HQ, named in the package's README.txt and manifest")
    _who(p, why=False)
    p.set_defaults(func=_run(_export))
    p = ev.add_parser("verify", help="check a package offline (no HQ database needed); exit 0 verified, "
                                     "1 a problem found, 3 UNVERIFIED (no --hq-key)")
    p.add_argument("dir", type=Path)
    p.add_argument("--hq-key", type=Path, help="HQ's public signing key (PEM), obtained separately; without it "
                   "the package is only checked against keys it carries itself: UNVERIFIED, exit 3")
    p.add_argument("--ca-cert", type=Path, help="HQ's CA certificate (PEM), obtained separately: the node keys' "
                   "proofs (enrolment certificate, rotations) are checked against it, and the count attested shown")
    p.add_argument("--case", help="the case the package must be for (FAIL if it is another's)")
    p.add_argument("--release", type=int, help="the release request the package must fulfil (FAIL if another)")
    p.set_defaults(func=_verify)

    # releases
    rel = sub.add_parser("release", help="release requests from other agencies").add_subparsers(
        dest="release_command", required=True)
    p = rel.add_parser("request", help="file a request")
    p.add_argument("--agency", required=True)
    p.add_argument("--requester", required=True)
    _who(p, case_required=True)
    p.set_defaults(func=_run(_release_request))
    p = rel.add_parser("review", help="approve or deny (administrator, not the one who filed it)")
    p.add_argument("id", type=int)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--approve", action="store_true")
    g.add_argument("--deny", dest="approve", action="store_false")
    p.add_argument("--note", required=True)
    _who(p, why=False)
    p.set_defaults(func=_run(_release_review))
    p = rel.add_parser("list", help="all requests (administrators)")
    _who(p, why=False)
    p.set_defaults(func=_run(_release_list))

    # retention
    ret = sub.add_parser("retention", help="purge reads past retention").add_subparsers(
        dest="retention_command", required=True)
    p = ret.add_parser("run", help="purge now (also from a systemd timer with --system)")
    p.add_argument("--min-days", type=int, help="keep reads longer than records.retention_days "
                   "(a value below it is refused; at most 36500)")
    p.add_argument("--system", action="store_true", help="run as the scheduled system job (no login)")
    _who(p, why=False)
    p.set_defaults(func=_run(_retention_run))

    p = ret.add_parser("status", help="schema version, read counts, what a purge would remove (technicians)")
    _who(p, why=False)
    p.set_defaults(func=_run(_store_status))

    # audit
    au = sub.add_parser("audit", help="access-log verification and audit reports").add_subparsers(
        dest="audit_command", required=True)
    p = au.add_parser("verify", help="check the access log's hash chain; names edited or deleted entries")
    p.add_argument("--expect-head", metavar="ID:HASH", help="a head noted at an earlier verify (kept outside HQ): "
                   "fails unless entry ID still has HASH, which catches a cut or rewritten log")
    _who(p, why=False)
    p.set_defaults(func=_run(_audit_verify))
    p = au.add_parser("report", help="accesses, searches without case, releases, purges, holds, provisioning")
    p.add_argument("--from", dest="since", required=True)
    p.add_argument("--to", dest="until", required=True)
    p.add_argument("--json", action="store_true")
    _who(p, why=False)
    p.set_defaults(func=_run(_audit_report))
