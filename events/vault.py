"""Secrets sealed before they enter an event: AES-GCM with a data key per secret.

The data key, wrapped by the master key, lives in the `data_keys` table, outside the
immutable log; deleting it (`shred`) makes the sealed value in the log unreadable forever.
"""

from __future__ import annotations

import base64
import os
import threading
from uuid import UUID, uuid4

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from flowledger.db import Database

TABLES = ["CREATE TABLE IF NOT EXISTS data_keys (key_id TEXT PRIMARY KEY, wrapped TEXT NOT NULL)"]


class SecretShredded(Exception):
    """The data key of this secret was deleted."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Vault:
    def __init__(self, db: Database, master_key: bytes) -> None:
        self._db = db
        self._master = AESGCM(master_key)
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def seal(self, plaintext: str) -> dict[str, str]:
        key_id = str(uuid4())
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        wrapped = nonce + self._master.encrypt(nonce, data_key, key_id.encode())
        self._db.query(
            "INSERT INTO data_keys (key_id, wrapped) VALUES (%s, %s)", (key_id, _b64(wrapped))
        )
        with self._lock:
            self._keys[key_id] = data_key
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext.encode(), key_id.encode())
        return {"key_id": key_id, "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}

    def open(self, sealed: dict[str, str]) -> str:
        key_id = sealed["key_id"]
        data_key = self._data_key(key_id)
        ciphertext = base64.b64decode(sealed["ciphertext"])
        nonce = base64.b64decode(sealed["nonce"])
        return AESGCM(data_key).decrypt(nonce, ciphertext, key_id.encode()).decode()

    def shred(self, key_id: str | UUID) -> None:
        self._db.query("DELETE FROM data_keys WHERE key_id = %s", (str(key_id),))
        with self._lock:
            self._keys.pop(str(key_id), None)

    def _data_key(self, key_id: str) -> bytes:
        with self._lock:
            cached = self._keys.get(key_id)
        if cached is not None:
            return cached
        row = self._db.one("SELECT wrapped FROM data_keys WHERE key_id = %s", (key_id,))
        if row is None:
            raise SecretShredded(key_id)
        wrapped = base64.b64decode(row["wrapped"])
        data_key = self._master.decrypt(wrapped[:12], wrapped[12:], key_id.encode())
        with self._lock:
            self._keys[key_id] = data_key
        return data_key
