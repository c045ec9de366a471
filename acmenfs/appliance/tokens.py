"""API tokens: making secrets, the admin token file, and the offline admin token reset.

Owns the secret format (``acmenfs_`` + 43 url-safe characters; only its sha256
is stored), writing ``<data>/admin.token`` (0600, atomically) and
``reset_admin_token``, the offline recovery for an appliance nobody can sign
in to (its database opened directly, so only while the appliance is
stopped). The service calls these; the store keeps the rows (and refuses to
delete the last token). It must not speak HTTP.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from pathlib import Path

from acmenfs.appliance.errors import NotFound
from acmenfs.appliance.models import Token, utc_now_text, validate_name
from acmenfs.appliance.storage import DataLayout
from acmenfs.appliance.store import Store, TokenRecord
from acmenfs.fs.durable import write_atomically

TOKEN_PREFIX = "acmenfs_"
ADMIN_TOKEN_SETTING = "admin_token_id"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_token(store: Store, name: str) -> tuple[Token, str]:
    validate_name(name)
    # The prefix keeps a secret from starting with "-" (which a command line would read
    # as an option) and lets secret scanners recognise it.
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = TokenRecord(id=str(uuid.uuid4()), name=name, created_at=utc_now_text())
    store.insert_token(record, hash_secret(secret))
    return Token(record.id, record.name, record.created_at), secret


def issue_admin_token(store: Store, layout: DataLayout) -> str:
    """A new token 'admin', written to <data>/admin.token (0600) and recorded as the admin token."""
    token, secret = new_token(store, "admin")
    write_atomically(layout.admin_token, (secret + "\n").encode(), mode=0o600)
    store.set_setting(ADMIN_TOKEN_SETTING, token.id)
    return secret


def reset_admin_token(data_dir: str | Path) -> str:
    """Offline recovery: a new admin token for a stopped appliance's data dir (also in admin.token).

    Raises ``NotFound`` if there is no appliance database there and
    ``store.DatabaseInUse`` while the appliance runs (it holds the database).
    """
    layout = DataLayout(Path(data_dir).resolve())
    if not layout.database.is_file():
        raise NotFound(f"no appliance database in {layout.root}")
    store = Store(layout.database, busy_timeout=1)
    store.open()
    try:
        return issue_admin_token(store, layout)
    finally:
        store.close()
