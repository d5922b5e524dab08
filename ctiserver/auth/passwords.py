"""Password hashing with argon2id (argon2-cffi), kept off the event loop.

Hashing and verifying cost tens of milliseconds of CPU and 64 MiB of memory
by design (RFC 9106's low-memory profile, argon2-cffi's default), so both run
in a worker thread: a sign-in never stalls calls being routed on the loop.
"""

from __future__ import annotations

import asyncio
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# The parameters new hashes get; `needs_rehash` compares stored hashes against them.
DEFAULT_HASHER: Final = PasswordHasher()

MIN_PASSWORD_LENGTH: Final = 8
# argon2 takes any length, but a megabyte "password" is only a way to burn CPU.
MAX_PASSWORD_LENGTH: Final = 1024


def password_problem(password: str) -> str | None:
    """Why `password` may not be set as a new password, or None when it may."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"a password may have at most {MAX_PASSWORD_LENGTH} characters"
    if password != password.strip():
        return "a password may not start or end with spaces"
    return None


async def hash_password(password: str, hasher: PasswordHasher = DEFAULT_HASHER) -> str:
    """The argon2id hash of `password` in PHC form, computed in a worker thread."""
    return await asyncio.to_thread(hasher.hash, password)


async def verify_password(
    password_hash: str, password: str, hasher: PasswordHasher = DEFAULT_HASHER
) -> bool:
    """True when `password` matches `password_hash`; False on a mismatch or a malformed hash."""

    def verify() -> bool:
        try:
            return hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def needs_rehash(password_hash: str, hasher: PasswordHasher = DEFAULT_HASHER) -> bool:
    """True when the hash was made with other parameters than `hasher`'s.

    Synchronous on purpose: it only parses the hash's parameter string.
    """
    try:
        return hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
