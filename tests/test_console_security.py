"""Each abuse of the console named in ``fedchain.console.security``, tried: it must fail."""

from __future__ import annotations

import re

import pytest

from fixtures_console import BASE, PORT, TOKEN, browser, consortium, open_console, plan_bytes, sim, text_of  # noqa: F401
from fedchain.console import security
from fedchain.contracts.bindings import Vote
from fedchain.usecases import datasets as uc_datasets, proposals as uc_proposals
from fedchain.sample_data import demo_plan
from fedchain.schema import load_schema


def proposal(sim) -> int:
    return uc_proposals.propose(sim.fed(sim.members[0]), sim.store,
                                sim.plan(demo_plan(sim.data.hospitals, seed=7))).id


# -- another local user -----------------------------------------------------------------------


def test_nothing_answers_without_a_session(sim):
    _state, _console, client = open_console(sim, sim.members[0])
    for path in ("/", "/proposals/1", "/datasets", "/rounds", "/audit", "/members", "/pulse"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code in (303, 401) and "hospital" not in r.text, path
        if r.status_code == 303:
            assert r.headers["location"] == "/login"
    assert client.get("/events").status_code == 401
    r = client.post("/prepare", data={"action": "vote", "proposal": "1", "choice": "yes"})
    assert r.status_code == 401
    assert client.get("/login").status_code == 200 and client.get("/static/console.css").status_code == 200


def test_the_login_token_opens_one_session_only(sim):
    _state, _console, client = open_console(sim, sim.members[0])
    assert client.get("/login?token=wrong", follow_redirects=False).status_code == 403
    assert client.get(f"/login?token={TOKEN[:-1]}", follow_redirects=False).status_code == 403
    r = client.get(f"/login?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert f"fedchain_console_{PORT}=" in cookie
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert TOKEN not in cookie  # the session id is not the token
    assert client.get("/").status_code == 200
    # the same token again (a link left in a history or a terminal), from another browser, opens nothing
    client.cookies.clear()
    assert client.get(f"/login?token={TOKEN}", follow_redirects=False).status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 303


def test_the_token_is_compared_in_constant_time(monkeypatch):
    calls = []
    real = security.hmac.compare_digest
    monkeypatch.setattr(security.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    gate = security.Gate(1234, token="s3cret")
    assert gate.login("s3cres") is None and gate.login("s3cret") is not None
    assert calls and all(isinstance(a, bytes) for a, _ in calls)


def test_guessing_is_bounded(sim):
    gate = security.Gate(PORT, token=TOKEN)
    for _ in range(security.MAX_FAILED_LOGINS):
        assert gate.login("guess") is None
    assert gate.login(TOKEN) is None, "after too many failures even the right token is refused"


def test_logout_ends_the_session(sim, browser):
    a = browser(sim.members[0])
    r = a.client.post("/logout", data={"csrf": a.csrf()})
    assert r.status_code == 200 and "logged out" in r.text
    assert a.get("/", follow_redirects=False).status_code == 303


# -- a malicious page in the same browser -------------------------------------------------------


def test_a_forged_post_without_the_csrf_token_is_refused(sim, browser):
    a = browser(sim.members[0])
    pid = proposal(sim)
    head = sim.chain.block_number
    for data in ({"action": "vote", "proposal": pid, "choice": "no"},
                 {"action": "vote", "proposal": pid, "choice": "no", "csrf": "forged"},
                 {"action": "vote", "proposal": pid, "choice": "no", "csrf": ""}):
        r = a.client.post("/prepare", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    page = a.prepare("vote", proposal=pid, choice="yes")
    key = re.search(r'action="/act/([^"]+)"', page.text).group(1)
    assert a.client.post(f"/act/{key}", data={}).status_code == 403
    assert a.client.post("/audit/replay", data={}).status_code == 403
    assert sim.chain.block_number == head and sim.fed().proposals.vote_of(pid, sim.members[0].address) is None


@pytest.mark.parametrize("headers", [
    {"origin": "http://evil.example"},
    {"origin": "null"},
    {"origin": f"http://127.0.0.1:{PORT + 1}"},  # another local server: another origin
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site"},
])
def test_a_cross_site_post_is_refused_even_with_the_token(sim, browser, headers):
    a = browser(sim.members[0])
    pid = proposal(sim)
    r = a.client.post("/prepare", data={"csrf": a.csrf(), "action": "vote", "proposal": pid, "choice": "no"},
                      headers=headers)
    assert r.status_code == 403 and "cross-site" in r.text
    assert sim.fed().proposals.vote_of(pid, sim.members[0].address) is None
    ok = a.client.post("/prepare", data={"csrf": a.csrf(), "action": "vote", "proposal": pid, "choice": "no"},
                       headers={"origin": BASE, "sec-fetch-site": "same-origin"})
    assert ok.status_code == 200 and "/act/" in ok.text


def test_dns_rebinding_gets_nothing(sim, browser):
    a = browser(sim.members[0])
    for host in ("evil.example", f"evil.example:{PORT}", f"127.0.0.1:{PORT + 1}", "127.0.0.1", "0.0.0.0:%d" % PORT):
        for path in ("/", "/login", f"/login?token={TOKEN}", "/static/console.js", "/pulse"):
            r = a.client.get(path, headers={"host": host}, follow_redirects=False)
            assert r.status_code == 403 and "Host" in r.text, (host, path)
    for host in (f"127.0.0.1:{PORT}", f"localhost:{PORT}", f"[::1]:{PORT}"):
        assert a.client.get("/", headers={"host": host}).status_code == 200, host


def test_pages_cannot_be_framed_and_run_only_our_own_script(sim, browser):
    a = browser(sim.members[0])
    for r in (a.get("/"), a.get("/login"), a.client.get("/", headers={"host": "evil.example"})):
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"  # the login link is never sent elsewhere
    html = a.get("/").text
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/console.js" defer>']
    assert "://" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', html)), "every asset is served locally"


# -- script in chain data -------------------------------------------------------------------------


def test_hostile_names_on_chain_are_shown_as_text(sim, browser):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    owner = sim.fed(sim.members[1])
    uc_datasets.register(owner, sim.store, name=evil, schema=load_schema(sim.data.hospitals[1].schema_path),
                         n_rows=5, description=evil, policy=uc_datasets.make_policy(purposes=[evil]))
    a = browser(sim.members[0])
    for path in ("/", "/datasets"):
        html = a.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert" in html


# -- changing what is signed, replaying, oversized -------------------------------------------------


def test_a_confirmed_action_is_signed_once_and_only_by_its_own_session(sim, browser):
    a = browser(sim.members[0])
    pid = proposal(sim)
    page = a.prepare("vote", proposal=pid, choice="yes")
    key = re.search(r'action="/act/([^"]+)"', page.text).group(1)
    b = browser(sim.members[1])
    stolen = b.client.post(f"/act/{key}", data={"csrf": b.csrf()})
    assert stolen.status_code == 404  # b's session never confirmed it
    assert sim.fed().proposals.vote_of(pid, sim.members[1].address) is None
    assert "Sent and mined" in a.client.post(f"/act/{key}", data={"csrf": a.csrf()}).text
    again = a.client.post(f"/act/{key}", data={"csrf": a.csrf()})
    assert again.status_code == 404 and "already used" in text_of(again.text)
    assert sim.fed().proposals.vote_of(pid, sim.members[0].address) == Vote.YES


def test_read_only_consoles_refuse_actions_even_with_a_valid_token(sim, browser):
    pid = proposal(sim)
    for ident, kw in ((sim.auditor, {}), (None, {}), (sim.members[0], {"read_only": True})):
        r = browser(ident, **kw)
        res = r.prepare("vote", proposal=pid, choice="yes")
        assert res.status_code == 403 and "offers no actions" in text_of(res.text)
    assert sim.fed().proposals.vote_of(pid, sim.members[0].address) is None


def test_oversized_bodies_are_refused(sim, browser):
    a = browser(sim.members[0])
    big = b"x" * (security.MAX_BODY_BYTES + 1)
    r = a.client.post("/prepare", content=big, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    r = a.client.post("/prepare", data={"csrf": a.csrf(), "action": "propose"},
                      files={"plan": ("plan.json", b" " * (security.MAX_BODY_BYTES - 1000), "application/json")})
    assert r.status_code in (400, 413)
    fields = {f"f{i}": "v" for i in range(200)}
    r = a.client.post("/prepare", data={"csrf": a.csrf(), **fields})
    assert r.status_code == 400
