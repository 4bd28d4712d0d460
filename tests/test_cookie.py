"""Where the cookie comes from, and the keys it gives (no processes involved)."""
from __future__ import annotations

import os
import stat

import pytest

import otp
from otp.cookie import BROKER_ROLE, curve_keypair, node_role, resolve_cookie


def test_the_argument_wins_then_the_environment(monkeypatch):
    monkeypatch.setenv("OTP_COOKIE", "from-env")
    assert resolve_cookie("given") == "given"
    assert resolve_cookie(None) == "from-env"


def test_a_cookie_file_is_made_once_with_mode_0400(monkeypatch, tmp_path):
    monkeypatch.delenv("OTP_COOKIE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    first = resolve_cookie(None)
    path = tmp_path / ".otp.cookie"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o400
    assert len(first) == 20 and first.isalpha()
    assert resolve_cookie(None) == first


def test_a_cookie_file_others_may_read_is_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("OTP_COOKIE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / ".otp.cookie"
    path.write_text("SECRET")
    path.chmod(0o644)
    with pytest.raises(otp.NodeError, match="chmod 400"):
        resolve_cookie(None)


def test_keys_follow_the_cookie_and_the_role():
    assert curve_keypair("a", BROKER_ROLE) == curve_keypair("a", BROKER_ROLE)
    assert curve_keypair("a", BROKER_ROLE) != curve_keypair("b", BROKER_ROLE)
    assert curve_keypair("a", node_role("x@h")) != curve_keypair("a", node_role("y@h"))
    public, secret = curve_keypair("a", BROKER_ROLE)
    assert len(public) == len(secret) == 40
