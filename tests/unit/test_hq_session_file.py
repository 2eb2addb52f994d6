"""`alpr-hq login` writes the session token atomically: never through a file or link put there.

`--session` is always given: the default path is read from $ALPR_HQ_SESSION when hq.records_cli
is imported, so setting the variable in a test would not keep the token out of ~/.config."""
from __future__ import annotations

import os

import pytest

from hq.synthetic import tiny_jpeg
from tests.support.hq_site import hq_site

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
PW = "correct horse battery"


@pytest.fixture
def site(tmp_path, monkeypatch):
    run, _, _ = hq_site(tmp_path, monkeypatch, lambda node, now: [node.read(1, "7ABC123", now - DAY,
                                                                            crop=tiny_jpeg("7ABC123"))])
    assert run("users", "add", "ada", "--role", "administrator", "--trained-until", "2099-01-01", "--bootstrap",
               new_password=PW) == 0
    return run, tmp_path


def test_login_replaces_a_planted_symlink_instead_of_writing_through_it(site):
    run, tmp = site
    victim = tmp / "victim.conf"
    victim.write_text("precious\n")
    session = tmp / "session"
    session.symlink_to(victim)
    assert run("login", "--user", "ada", "--session", str(session), password=PW) == 0
    assert victim.read_text() == "precious\n"          # the link's target is untouched
    assert not session.is_symlink()
    assert session.stat().st_mode & 0o777 == 0o600
    token = session.read_text().strip()
    assert len(token) >= 32
    assert run("logout", "--session", str(session)) == 0 and not session.exists()


def test_login_never_leaves_the_token_in_a_readable_file(site):
    run, tmp = site
    session = tmp / "session"
    session.write_text("old\n")
    os.chmod(session, 0o644)  # an older file other users could read
    other = tmp / "other-name"
    os.link(session, other)   # ...and a second name for the same file
    assert run("login", "--user", "ada", "--session", str(session), password=PW) == 0
    assert session.stat().st_mode & 0o777 == 0o600
    assert other.read_text() == "old\n"                # a new file, not the old one rewritten
