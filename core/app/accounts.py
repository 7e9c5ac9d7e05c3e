"""Accounts, roles, sessions and the four-eyes setting (docs/WORKBENCH.md, "Accounts and roles").

Who is who: local accounts in the store's ``users`` table with argon2id password hashes
(``argon2-cffi``: salted, slow, parameters stored in the hash). A person signs in with name and
password and gets a session token; only the token's SHA-256 is stored, with an expiry
(``$BIASREPAIR_SESSION_HOURS``, default 12 hours). The token stays on the server, in the Streamlit
session, so a page refresh asks for the password again.

Roles: ``curator`` uploads data, labels and starts repairs; ``approver`` reviews, approves,
rejects, exports and rolls back; ``admin`` manages accounts and settings and may do everything.
A :class:`User` is what the state-changing core functions take as ``actor``: it is the person's
name (a ``str``, so audit rows and ``created_by`` columns record exactly that name) carrying its
roles. :func:`require` is the one check: a missing role raises :class:`Forbidden` and writes a
``forbidden`` audit row. A plain string is nobody: it holds no role.

Demo mode: "Open the demo" without an account signs in a demo session (name ``demo``). It may
label, start repairs and name groups on its own copy of the demo only (its sandbox,
:mod:`core.app.sandboxes`); it can never approve or export.

Failed sign-ins: after ``$BIASREPAIR_SIGNIN_ATTEMPTS`` (5) failures for one name within
``$BIASREPAIR_SIGNIN_LOCK_MINUTES`` (15), that name cannot sign in until the window has passed or an
admin sets a new password; the password is not even checked meanwhile. Unknown names are counted
and locked the same way, so the lock tells nothing about which names exist. (Anyone who knows a name
can thereby keep it locked out for a while: the price of stopping password guessing.) Each attempt is
counted before its password is checked, in the transaction that checks the lock, so attempts sent at
once cannot all slip past it; at most :data:`PASSWORD_CHECKS_AT_ONCE` argon2 checks run at once.

First run: with no account yet, the first account made is an admin, from the sign-in page's form
or from ``$BIASREPAIR_ADMIN_USER`` / ``$BIASREPAIR_ADMIN_PASSWORD`` at server start.

The ``BIASREPAIR_*`` settings are parsed by :mod:`core.settings`: a bad value (``BIASREPAIR_SESSION_HOURS=soon``)
refuses the sign-in with a message naming the variable and the value.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import math
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core import settings
from core.app.store import Store
from core.errors import UserError


class Role(enum.StrEnum):
    """What a person may do; an admin holds every role."""

    CURATOR = "curator"
    APPROVER = "approver"
    ADMIN = "admin"


ROLES = tuple(Role)
DEMO_NAME = "demo"
MIN_PASSWORD = 8
SESSION_HOURS_ENV = settings.SESSION_HOURS.name
ADMIN_USER_ENV = settings.ADMIN_USER.name
ADMIN_PASSWORD_ENV = settings.ADMIN_PASSWORD.name
RELAX_FOUR_EYES = "relax_four_eyes"
SIGNIN_ATTEMPTS_ENV = settings.SIGNIN_ATTEMPTS.name
SIGNIN_LOCK_MINUTES_ENV = settings.SIGNIN_LOCK_MINUTES.name

# What a demo session may do, and only on its own sandbox.
DEMO_ACTIONS = frozenset(
    {"open_demo", "reset_demo", "label", "start_run", "cancel_run", "name_group", "save_alpha", "report"}
)

_hasher = PasswordHasher()
# Each argon2id hash or check takes the hasher's memory_cost (64 MiB) for ~0.1-0.5 s. At most this many
# run at once in one server; the others wait their turn, so a burst of sign-ins (known names or not)
# costs at most PASSWORD_CHECKS_AT_ONCE * 64 MiB, not 64 MiB per request.
PASSWORD_CHECKS_AT_ONCE = 2
_password_checks = threading.BoundedSemaphore(PASSWORD_CHECKS_AT_ONCE)


@functools.cache
def _nobody_hash() -> str:
    """A hash no password matches, checked for an unknown name so that it takes as long as a known one."""
    with _password_checks:
        return _hasher.hash(secrets.token_urlsafe(16))


def _hash(password: str) -> str:
    with _password_checks:
        return _hasher.hash(password)


def _verify(password_hash: str, password: str) -> None:
    """Raise VerificationError (or InvalidHashError) unless ``password`` matches ``password_hash``."""
    with _password_checks:
        _hasher.verify(password_hash, password)


class User(str):
    """A signed-in person: their name (what every audit row records) with their roles.

    ``demo`` marks the demo session; ``session`` is the SHA-256 of the session token it came from
    (None for a person acting in-process, e.g. from a test). Equal to, and hashable as, the plain
    name. What it carries is what was true when it was made: :func:`require` reads the store again
    and trusts only that."""

    roles: frozenset[str]
    demo: bool
    session: str | None

    def __new__(cls, name: str, roles: Iterable[str] = (), demo: bool = False, session: str | None = None) -> User:
        obj = super().__new__(cls, name)
        obj.roles = frozenset(roles)
        obj.demo = demo
        obj.session = session
        return obj

    def can(self, role: str) -> bool:
        """Whether this person holds ``role`` (an admin holds every role)."""
        return role in self.roles or Role.ADMIN in self.roles


class Forbidden(UserError):
    """An action the signed-in person's role does not allow."""


def current(store: Store, user: User) -> User | None:
    """``user`` as the store says it is now: None when its session has ended or expired, or its
    account is gone or disabled; otherwise with the account's current roles. A person acting
    in-process (no session) keeps the roles given unless the store has an account of that name."""
    if user.session is not None:
        row = store.session_account(user.session)
        if row is None or row["user"] != str(user) or bool(row["demo"]) != user.demo:
            return None
        if row["demo"]:
            return User(DEMO_NAME, [Role.CURATOR], demo=True, session=user.session)
    elif user.demo:
        return user
    else:
        row = store.user_row(str(user))
        if row is None:
            return user
    return None if row["disabled"] else User(str(user), row["roles"].split(","), session=user.session)


def require(store: Store, user: object, role: str | None, action: str, project_id: int | None = None) -> User:
    """Return the acting person, as the store has them now, if they may do ``action`` (which needs
    ``role``; None: any signed-in person) on ``project_id``; otherwise write a ``forbidden`` audit
    row and raise :class:`Forbidden`. The session and account are read again each time (a tab open
    since before its account was disabled, demoted or its session expired is refused); call it inside
    :func:`acting` so that the check and the action are one transaction. A demo session may only do
    :data:`DEMO_ACTIONS`, and only on its own sandbox (a demo actor without a session, made in-process,
    on the demo project itself)."""
    fresh = current(store, user) if isinstance(user, User) else None
    if isinstance(user, User) and fresh is None:
        store.audit_refusal(str(user), "forbidden", project_id, attempted=action, needs=role, session_ended=True)
        raise Forbidden(
            f"{user} is no longer signed in (the session ended or the account was disabled): sign in again",
            "session_ended",
            action=action,
        )
    ok = fresh is not None and (role is None or fresh.can(role))
    demo_refused = False
    if fresh is not None and fresh.demo:
        ok = ok and action in DEMO_ACTIONS and _on_own_demo(store, fresh, action, project_id)
        demo_refused = not ok
    if ok:
        return fresh
    name = str(user) if isinstance(user, str) and user else "anonymous"
    store.audit_refusal(name, "forbidden", project_id, attempted=action, needs=role, demo=demo_refused)
    if demo_refused:
        raise Forbidden(
            f"the demo session cannot {action.replace('_', ' ')}: sign in with an account that may",
            "forbidden_demo",
            action=action,
        )
    if role is None:
        raise Forbidden(f"sign in to {action.replace('_', ' ')}", "sign_in_needed", action=action)
    raise Forbidden(
        f"{name} may not {action.replace('_', ' ')}: that needs the {role} role", "forbidden", action=action, role=role
    )


def _on_own_demo(store: Store, demo: User, action: str, project_id: int | None) -> bool:
    """Whether ``project_id`` is where demo session ``demo`` may act: its own sandbox (no project to open the demo)."""
    if action == "open_demo":
        return project_id is None
    p = store.project(project_id) if project_id is not None else None
    if p is None:
        return False
    if demo.session is None:
        return bool(p["is_demo"]) and p["sandbox_of"] is None
    return p["sandbox_of"] is not None and p["demo_session"] == demo.session


@contextlib.contextmanager
def acting(store: Store, user: object, role: str | None, action: str, project_id: int | None = None) -> Iterator[User]:
    """One write transaction in which :func:`require` checks ``user`` and the body does what it allows:
    an account disabled, demoted or signed out meanwhile cannot slip in between. Yields the person as
    the store has them now."""
    with store.transaction():
        yield require(store, user, role, action, project_id)


# ---- passwords and accounts -----------------------------------------------------------------
# Names the workbench itself writes as an actor (audit rows of refusals and of a name-less sign-in),
# or that would pass for it; compared after NFKC and case folding.
RESERVED_NAMES = frozenset({DEMO_NAME, "anonymous", "unknown", "nobody", "system", "workbench"})
# Passwords the first guesses of any attacker try; compared case-folded. Not a full breach list: a
# floor, with the length, under what an admin may hand out.
COMMON_PASSWORDS = frozenset(
    """password password1 password12 password123 passw0rd p@ssw0rd p@ssword 12345678 123456789
    1234567890 0123456789 87654321 11111111 00000000 12341234 11223344 123123123 qwertyui qwerty12
    qwerty123 qwertyuiop 1q2w3e4r 1qaz2wsx zaq12wsx q1w2e3r4 asdfghjk asdf1234 abcd1234 abc12345
    iloveyou letmein1 welcome1 welcome123 changeme admin123 administrator trustno1 sunshine princess
    football baseball superman starwars whatever dragon12 monkey12 secret12 master12 computer
    internet""".split()
)
_JAPANESE = {"CJK", "HIRAGANA", "KATAKANA", "HALFWIDTH"}


def _script(ch: str) -> str:
    """The script of a letter, by its Unicode name's first word (Japanese writing counts as one)."""
    word = unicodedata.name(ch, "UNKNOWN").split()[0]
    return "JAPANESE" if word in _JAPANESE else word


def normal_name(name: str) -> str:
    """A user name as it is kept and compared: NFKC (full-width ``ａｄｍｉｎ`` is ``admin``), no
    surrounding spaces."""
    return unicodedata.normalize("NFKC", name or "").strip()


def _check_name(name: str) -> str:
    name = normal_name(name)
    if not re.fullmatch(r"[\w.@-]{1,64}", name):
        raise UserError("a user name is 1–64 letters, digits or . _ @ -", "user_name")
    if name.casefold() == DEMO_NAME:
        raise UserError(f"the name {DEMO_NAME!r} is kept for the demo session", "user_name_reserved", name=name)
    if name.casefold() in RESERVED_NAMES:
        raise UserError(f"the name {name} is kept for the workbench's own records", "user_name_kept", name=name)
    if len({_script(c) for c in name if c.isalpha()}) > 1:
        raise UserError(
            f"the name {name} mixes letters of different scripts (Latin and Cyrillic, say), so it could pass for "
            "another name: use one script",
            "user_name_mixed",
            name=name,
        )
    return name


def _check_password(password: str, name: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters", "password_short", n=MIN_PASSWORD)
    folded = password.casefold()
    if folded in COMMON_PASSWORDS or folded == name.casefold() or len(set(folded)) < 4:
        raise UserError(
            "this password is among the first ones anyone would guess (a common password, the name, or a few "
            "characters repeated): choose another",
            "password_common",
        )
    return password


def _check_roles(roles: Iterable[str]) -> list[str]:
    roles = [r for r in ROLES if r in set(roles)]
    if not roles:
        raise UserError(f"choose at least one role ({', '.join(ROLES)})", "roles_empty")
    return roles


def has_users(store: Store) -> bool:
    return store.has_users()


def users(store: Store) -> list[dict]:
    """Every account: name, roles (a list), created_at, created_by, disabled (a bool). Never the hash."""
    rows = store.user_rows()
    for r in rows:
        r["roles"], r["disabled"] = r["roles"].split(","), bool(r["disabled"])
    return rows


def create_user(store: Store, admin: User | None, name: str, password: str, roles: Iterable[str]) -> User:
    """Make an account. The very first account needs no admin and must be an admin itself."""
    name, roles = _check_name(name), _check_roles(roles)
    _check_password(password, name)
    password_hash = _hash(password)  # slow on purpose: before the transaction
    # Whether this is the first account, who may make it and the new row: one write transaction, so
    # that of several first-run forms sent at once only one makes an admin and the others are refused.
    with store.transaction():
        first = not has_users(store)
        if first:
            if Role.ADMIN not in roles:
                raise UserError("the first account must be an admin", "first_admin")
            creator = name
        else:  # a first-run form sent after another one made the first admin is refused here
            creator = require(store, admin, Role.ADMIN, "manage_users")
        same = [r["name"] for r in store.user_rows() if normal_name(r["name"]).casefold() == name.casefold()]
        if same:  # "ROOT" beside "root" would be two people the pages show alike
            raise UserError(f"there is already an account named {same[0]}", "user_exists", name=same[0])
        store.add_user(name, password_hash, roles, str(creator))
        store.audit(creator, "user_created", None, user=name, roles=roles, first=first)
    return User(name, roles)


def set_roles(store: Store, admin: User, name: str, roles: Iterable[str]) -> None:
    with acting(store, admin, Role.ADMIN, "manage_users") as admin:
        roles = _check_roles(roles)
        row = _user_row(store, name)
        if Role.ADMIN not in roles and Role.ADMIN in row["roles"].split(",") and _admin_count(store) == 1:
            raise UserError("keep at least one admin account", "last_admin")
        store.set_user_roles(name, roles)
        store.audit(admin, "roles_changed", None, user=name, roles=roles, previous=row["roles"].split(","))


def reset_password(store: Store, admin: User, name: str, password: str) -> None:
    """Set a new password for an account; its open sessions end."""
    require(store, admin, Role.ADMIN, "manage_users")
    _check_password(password, name)
    password_hash = _hash(password)  # slow on purpose: before the transaction
    with acting(store, admin, Role.ADMIN, "manage_users") as admin:
        _user_row(store, name)
        store.reset_password_hash(name, password_hash)  # also ends its sessions and lifts a lock
        store.audit(admin, "password_reset", None, user=name)


def _user_row(store: Store, name: str) -> dict:
    row = store.user_row(name)
    if row is None:
        raise UserError(f"there is no account named {name}", "user_unknown", name=name)
    return row


def _admin_count(store: Store) -> int:
    """Admin accounts that can sign in (not disabled)."""
    return sum(Role.ADMIN in r["roles"] and not r["disabled"] for r in users(store))


def set_disabled(store: Store, admin: User, name: str, disabled: bool) -> None:
    """Disable an account (it cannot sign in, and its open sessions end at once) or enable it again.
    Nothing it did is removed: its labels, runs and audit rows keep its name. An admin cannot disable
    their own account, nor the last admin account that can sign in."""
    with acting(store, admin, Role.ADMIN, "manage_users") as admin:
        row = _user_row(store, name)
        if bool(row["disabled"]) == disabled:
            return
        if disabled and name == str(admin):
            raise UserError("you cannot disable your own account", "disable_self")
        if disabled and Role.ADMIN in row["roles"].split(",") and _admin_count(store) == 1:
            raise UserError("keep at least one admin account", "last_admin")
        store.set_user_disabled(name, disabled)
        store.audit(admin, "account_disabled" if disabled else "account_enabled", None, user=name)


def ensure_admin_from_env(store: Store) -> bool:
    """On a store without accounts, make the admin named by ``$BIASREPAIR_ADMIN_USER`` with
    ``$BIASREPAIR_ADMIN_PASSWORD``. Returns whether it made one."""
    name, password = settings.ADMIN_USER.get(), settings.ADMIN_PASSWORD.get()
    if not name or not password or has_users(store):
        return False
    create_user(store, None, name, password, [Role.ADMIN, Role.APPROVER, Role.CURATOR])
    return True


# ---- sessions ---------------------------------------------------------------------------------
def session_hours() -> float:
    return settings.SESSION_HOURS.get()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_session(store: Store, name: str, demo: bool) -> str:
    lifetime_s = 3600 * session_hours()
    token = secrets.token_urlsafe(32)
    store.add_session(_digest(token), name, demo, lifetime_s)
    return token


def locked_minutes(store: Store, name: str) -> int:
    """Whole minutes until ``name`` may try to sign in again; 0 when it may now. Locked while there
    are ``$BIASREPAIR_SIGNIN_ATTEMPTS`` failures within the last ``$BIASREPAIR_SIGNIN_LOCK_MINUTES``."""
    attempts = settings.SIGNIN_ATTEMPTS.get()
    window = 60 * settings.SIGNIN_LOCK_MINUTES.get()
    recent = store.recent_sign_in_failures(name, window, attempts)
    if len(recent) < attempts:
        return 0
    return max(1, math.ceil((recent[-1] + window - time.time()) / 60))


def _count_attempt(store: Store, name: str) -> None:
    """Refuse a locked ``name``; otherwise count this attempt as a failure now, in the same write
    transaction as the check (a success takes it back). So of any number of attempts sent at once,
    at most ``$BIASREPAIR_SIGNIN_ATTEMPTS`` get their password checked."""
    with store.transaction():
        minutes = locked_minutes(store, name)
        if minutes:
            store.audit_refusal(name or "anonymous", "sign_in_locked", None, minutes=minutes)
            raise UserError(
                f"too many failed sign-ins as {name}: try again in {minutes} minute(s), or ask an admin for a new password",
                "sign_in_locked",
                name=name,
                minutes=minutes,
            )
        store.add_sign_in_failure(name)


def sign_in(store: Store, name: str, password: str) -> str:
    """Check a name and password; return a new session token. A failure says nothing about which
    of the two was wrong and is audited (with the name only); too many failures lock the name for a
    while (see the module's text)."""
    name = normal_name(name)
    _count_attempt(store, name)
    row = store.user_row(name)
    try:
        _verify(row["password_hash"] if row else _nobody_hash(), password or "")
        if row is None:
            raise VerificationError("no such user")
    except (VerificationError, InvalidHashError):
        store.audit(name or "anonymous", "sign_in_failed", None)
        raise UserError("wrong name or password", "sign_in_failed") from None
    store.clear_sign_in_failures(name)
    if row["disabled"]:  # said only to someone who knows the password
        store.audit(name, "sign_in_refused_disabled", None)
        raise UserError(f"the account {name} is disabled: ask an admin", "account_disabled", name=name)
    if _hasher.check_needs_rehash(row["password_hash"]):
        store.set_password_hash(name, _hash(password))
    token = _new_session(store, name, demo=False)  # first: a bad session setting refuses the sign-in
    store.audit(name, "signed_in", None)
    return token


def demo_session(store: Store) -> str:
    """A session for the demo mode (no account, curator rights on the demo project only)."""
    token = _new_session(store, DEMO_NAME, demo=True)
    store.audit(DEMO_NAME, "signed_in", None, demo=True)
    return token


def user_for(store: Store, token: str | None) -> User | None:
    """The person a session token belongs to, with their current roles; None when the token is
    unknown, expired or its account is gone or disabled."""
    if not token:
        return None
    digest = _digest(token)
    row = store.session_account(digest)
    if row is None or row["disabled"]:
        return None
    if row["demo"]:
        return User(DEMO_NAME, [Role.CURATOR], demo=True, session=digest)
    return User(row["user"], row["roles"].split(","), session=digest)


def sign_out(store: Store, token: str | None) -> None:
    user = user_for(store, token)
    if token:
        store.end_session(_digest(token))
    if user is not None:
        store.audit(user, "signed_out", None)


# ---- settings ---------------------------------------------------------------------------------
def setting(store: Store, key: str, default: str = "") -> str:
    value = store.setting(key)
    return default if value is None else value


def four_eyes_relaxed(store: Store) -> bool:
    """Whether an admin has relaxed the four-eyes rule (for a single-person pilot)."""
    return setting(store, RELAX_FOUR_EYES) == "1"


def set_four_eyes_relaxed(store: Store, admin: User, relaxed: bool) -> None:
    with acting(store, admin, Role.ADMIN, "change_settings") as admin:
        if four_eyes_relaxed(store) == relaxed:
            return
        store.set_setting(RELAX_FOUR_EYES, "1" if relaxed else "0")
        store.audit(admin, "four_eyes_relaxed" if relaxed else "four_eyes_restored", None)
