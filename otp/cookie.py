"""The cookie: the shared secret that admits a node to a cluster, and the CURVE keys it yields.

As in Erlang, the cookie comes from the ``cookie=`` argument, else ``$OTP_COOKIE``, else the
file ``~/.otp.cookie``, created on first use with 20 random letters and mode 0400. A cookie file
that group or others may read is refused.

The cookie never crosses the wire. The broker's CURVE key pair, and each node's, are derived from
it (HMAC-SHA256 of the cookie over the role), so a node that knows the cookie can authenticate
the broker, and the broker can check that a node's key is the one its name and the cookie give:
CURVE's handshake is the proof, both ways.

    >>> server_public, server_secret = curve_keypair("secret", BROKER_ROLE)
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import string

import zmq
from zmq.utils import z85

from otp.errors import NodeError

COOKIE_ENV = "OTP_COOKIE"
COOKIE_FILE = "~/.otp.cookie"
BROKER_ROLE = "broker"


def node_role(node_name: str) -> str:
    return f"node:{node_name}"


def resolve_cookie(cookie: str | None = None) -> str:
    """The cookie to use: the argument, ``$OTP_COOKIE``, or ``~/.otp.cookie`` (made if missing)."""
    if cookie:
        return cookie
    from_env = os.environ.get(COOKIE_ENV)
    if from_env:
        return from_env
    path = os.path.expanduser(COOKIE_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write("".join(secrets.choice(string.ascii_uppercase) for _ in range(20)))
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise NodeError(f"the cookie file {path} may be read by group or others "
                        f"(mode {stat.S_IMODE(mode):o}): chmod 400 it")
    with open(path) as f:
        value = f.read().strip()
    if not value:
        raise NodeError(f"the cookie file {path} is empty")
    return value


def curve_keypair(cookie: str, role: str) -> tuple[bytes, bytes]:
    """The (public, secret) CURVE key pair, Z85-encoded, that ``cookie`` gives ``role``."""
    seed = hmac.new(cookie.encode(), f"otp curve {role}".encode(), hashlib.sha256).digest()
    secret = z85.encode(seed)
    return zmq.curve_public(secret), secret
