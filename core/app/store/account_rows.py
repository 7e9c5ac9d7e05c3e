"""Accounts and sessions in the store: users with their password hashes and roles, session tokens
(their SHA-256 only), failed sign-ins, and the admin's key/value settings. The rules (who may do
what, how long a session lasts, when a name is locked) are in :mod:`core.app.accounts`."""

from __future__ import annotations

import time

from core.app.store.base import StoreBase, now_iso


class AccountRows(StoreBase):
    # ---- users -----------------------------------------------------------------------------
    def has_users(self) -> bool:
        return self._one("SELECT name FROM users LIMIT 1") is not None

    def user_rows(self) -> list[dict]:
        """Every account, by name: name, roles (comma-separated), created_at, created_by, disabled.
        Never the hash."""
        return self._query("SELECT name, roles, created_at, created_by, disabled FROM users ORDER BY name")

    def user_row(self, name: str) -> dict | None:
        """One account's row, its password hash included; None when there is no such name."""
        return self._one("SELECT * FROM users WHERE name = ?", (name,))

    def add_user(self, name: str, password_hash: str, roles: list[str], created_by: str) -> None:
        self._execute(
            "INSERT INTO users (name, password_hash, roles, created_at, created_by) VALUES (?,?,?,?,?)",
            (name, password_hash, ",".join(roles), now_iso(), created_by),
        )

    def set_user_roles(self, name: str, roles: list[str]) -> None:
        self._execute("UPDATE users SET roles = ? WHERE name = ?", (",".join(roles), name))

    def set_password_hash(self, name: str, password_hash: str) -> None:
        """A new hash of the same password (its parameters were outdated)."""
        self._execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))

    def reset_password_hash(self, name: str, password_hash: str) -> None:
        """A new password: the account's open sessions end and a lock on its name is lifted, at once."""
        with self._connect() as con:
            con.execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))
            con.execute("DELETE FROM sessions WHERE user = ?", (name,))
            con.execute("DELETE FROM sign_in_failures WHERE name = ?", (name,))

    def set_user_disabled(self, name: str, disabled: bool) -> None:
        """Disable an account (its open sessions end at once) or enable it again."""
        with self._connect() as con:
            con.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name))
            if disabled:
                con.execute("DELETE FROM sessions WHERE user = ?", (name,))

    # ---- sessions --------------------------------------------------------------------------
    def add_session(self, token_sha256: str, user: str, demo: bool, lifetime_s: float) -> None:
        """A session that ends ``lifetime_s`` seconds from now; sessions already over are removed."""
        now = time.time()
        with self._connect() as con:
            con.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            con.execute(
                "INSERT INTO sessions (token_sha256, user, demo, created_at, expires_at) VALUES (?,?,?,?,?)",
                (token_sha256, user, int(demo), now_iso(), now + lifetime_s),
            )

    def session_account(self, token_sha256: str) -> dict | None:
        """A live session with its account's current state, read together: ``user``, ``demo``,
        ``roles`` and ``disabled`` (None for the demo session, which has no account); None when the
        session is unknown, over, or its account is gone."""
        with self._connect(write=False) as con:
            row = con.execute(
                "SELECT s.user, s.demo, u.roles, u.disabled, u.name AS account FROM sessions s"
                " LEFT JOIN users u ON u.name = s.user WHERE s.token_sha256 = ? AND s.expires_at >= ?",
                (token_sha256, time.time()),
            ).fetchone()
        if row is None or (not row["demo"] and row["account"] is None):
            return None
        return dict(row)

    def session_row(self, token_sha256: str) -> dict | None:
        return self._one("SELECT * FROM sessions WHERE token_sha256 = ?", (token_sha256,))

    def end_session(self, token_sha256: str) -> None:
        self._execute("DELETE FROM sessions WHERE token_sha256 = ?", (token_sha256,))

    # ---- failed sign-ins -------------------------------------------------------------------
    def recent_sign_in_failures(self, name: str, window_s: float, limit: int) -> list[float]:
        """When (Unix times, newest first, at most ``limit``) ``name`` failed to sign in within the last
        ``window_s`` seconds; older failures are forgotten."""
        with self._connect() as con:
            con.execute("DELETE FROM sign_in_failures WHERE at < ?", (time.time() - window_s,))
            rows = con.execute(
                "SELECT at FROM sign_in_failures WHERE name = ? ORDER BY at DESC LIMIT ?", (name, limit)
            ).fetchall()
        return [r["at"] for r in rows]

    def add_sign_in_failure(self, name: str) -> None:
        self._execute("INSERT INTO sign_in_failures (name, at) VALUES (?, ?)", (name, time.time()))

    def clear_sign_in_failures(self, name: str) -> None:
        self._execute("DELETE FROM sign_in_failures WHERE name = ?", (name,))

    # ---- the admin's settings --------------------------------------------------------------
    def setting(self, key: str) -> str | None:
        row = self._one("SELECT value FROM settings WHERE key = ?", (key,))
        return row["value"] if row else None

    def set_setting(self, key: str, value: str) -> None:
        self._execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
