"""Console sign-in sessions: opaque session ids, their CSRF tokens, flash messages.

Owns ``SessionStore`` (in memory, bounded, idle expiry) and ``Session``. A
session id is a random opaque string kept in an HttpOnly, SameSite=Strict
cookie; the API token the user signed in with stays on the server, in the
session, and is verified again on every request, so revoking the token ends the
session. Each session has its own CSRF token that every change must carry. It
must not call the appliance service (the routes do) nor render anything.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

SESSION_COOKIE = "acmenfs_session"
LOGIN_CSRF_COOKIE = "acmenfs_login_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
IDLE_TIMEOUT = 8 * 3600.0  # seconds without a request before a session ends
MAX_SESSIONS = 1024


@dataclass
class Session:
    """One signed-in browser: the token it signed in with and its CSRF token."""

    id: str
    token_secret: str
    token_id: str
    token_name: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_seen: float = field(default_factory=time.monotonic)
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def flash(self, kind: str, text: str) -> None:
        """Queue a message ("ok" or "error") for the next page this session sees."""
        self.flashes.append((kind, text))

    def take_flashes(self) -> list[tuple[str, str]]:
        flashes, self.flashes = self.flashes, []
        return flashes

    def csrf_matches(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate.encode(), self.csrf.encode())


class SessionStore:
    """Sessions by id, oldest dropped first beyond ``max_sessions``; thread-safe."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT, max_sessions: int = MAX_SESSIONS) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, token_secret: str, token_id: str, token_name: str) -> Session:
        session = Session(secrets.token_urlsafe(32), token_secret, token_id, token_name)
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session for ``session_id`` (touched), or None if unknown or idle too long."""
        if not session_id:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > self.idle_timeout:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            self._sessions.move_to_end(session_id)
            return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def drop_token(self, token_id: str) -> None:
        """End every session signed in with ``token_id`` (after it is revoked)."""
        with self._lock:
            for session_id in [s.id for s in self._sessions.values() if s.token_id == token_id]:
                del self._sessions[session_id]


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


def login_csrf_matches(cookie: str | None, submitted: str | None) -> bool:
    """Double-submit check for the sign-in form (there is no session yet)."""
    return bool(cookie) and bool(submitted) and hmac.compare_digest(cookie.encode(), submitted.encode())
