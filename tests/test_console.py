"""The governance console on the embedded chain and store: pages, actions through the use cases, live data."""

from __future__ import annotations

import re

import pytest

from fixtures_console import browser, consortium, login, plan_bytes, sim, text_of  # noqa: F401 - fixtures
from fedchain.console import PAGES
from fedchain.console.chart import line_chart
from fedchain.contracts.bindings import ProposalState, Vote, purpose_hash
from fedchain.identity import dev_identity
from fedchain.sample_data import demo_plan
from fedchain.usecases import datasets as uc_datasets, proposals as uc_proposals


def submit(b, sim, **kw) -> int:
    page = b.do("propose", files={"plan": ("plan.json", plan_bytes(sim, **kw), "application/json")})
    assert page.status_code == 200, text_of(page.text)
    return int(re.search(r"Sent and mined: id (\d+)", page.text).group(1))


def test_every_page_renders_and_keeps_a_place_for_later_pages(sim, browser):
    a = browser(sim.members[0])
    pid = submit(a, sim)
    paths = [p.path for p in PAGES] + [f"/proposals/{pid}", f"/datasets/{sim.names[0]}"]
    for path in paths:
        r = a.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert "fedchain <span>governance console</span>" in r.text
    later = {p.path: p.later for p in PAGES if p.later}
    assert set(later) == {"/models", "/budgets"}
    assert "arrives with the model commands" in text_of(a.get("/models").text)
    assert a.get("/proposals/99").status_code == 404 and a.get("/datasets/nope").status_code == 404


def test_a_proposal_in_words_with_its_targets_and_votes(sim, browser):
    a = browser(sim.members[0])
    pid = submit(a, sim)
    page = text_of(a.get(f"/proposals/{pid}").text)
    info = sim.fed().proposals.proposal(pid)
    assert "logistic regression, 30 inputs, 2 classes" in page and "FedAvg" in page
    assert info.plan_cid in page and "0x" + info.plan_sha256.hex() in page
    for name in sim.names:
        assert f"{name} ({sim.members[sim.names.index(name)].address[:6].lower()}" in page
    assert "its policy would admit it once approved" in page
    assert "hospital-a 0xf39f…2266 not yet" in page


def test_two_members_vote_and_the_proposal_is_finalized_on_chain(sim, browser):
    a, b = browser(sim.members[0]), browser(sim.members[1])
    pid = submit(a, sim)
    for who in (a, b):
        done = who.do("vote", proposal=pid, choice="yes")
        assert "Sent and mined" in done.text, text_of(done.text)
    fed = sim.fed()
    assert fed.proposals.vote_of(pid, sim.members[0].address) == Vote.YES
    assert fed.proposals.vote_of(pid, sim.members[1].address) == Vote.YES
    assert fed.read_model().proposals[pid].votes == {sim.members[0].address.lower(): "yes",
                                                     sim.members[1].address.lower(): "yes"}
    page = text_of(b.get(f"/proposals/{pid}").text)
    assert "hospital-a 0xf39f…2266 yes" in page and "hospital-b 0x7099…79c8 yes" in page
    sim.end_vote(pid)
    done = b.do("finalize", proposal=pid)
    assert "Sent and mined" in done.text
    assert fed.proposals.proposal(pid).state == ProposalState.APPROVED
    page = text_of(a.get(f"/proposals/{pid}").text)
    assert "approved" in page and "admits it" in page


def test_the_confirmation_page_shows_exactly_what_will_be_signed(sim, browser):
    a = browser(sim.members[0])
    pid = submit(a, sim)
    page = a.prepare("vote", proposal=pid, choice="no")
    words = text_of(page.text)
    assert page.status_code == 200
    assert "Proposals.vote" in words
    assert f"argument id {pid}" in words and "argument choice no (2)" in words
    assert f"acting account hospital-a (0xf39F…2266) — {sim.members[0].address}" in words
    assert sim.deployment.addresses["Proposals"] in words
    assert sim.fed().proposals.vote_of(pid, sim.members[0].address) is None, "confirming must not send"
    # the final POST names only the stored action: extra fields cannot change what is signed
    key = re.search(r'action="/act/([^"]+)"', page.text).group(1)
    done = a.client.post(f"/act/{key}", data={"csrf": a.csrf(), "choice": "yes", "proposal": "99"})
    assert "Sent and mined" in done.text
    assert sim.fed().proposals.vote_of(pid, sim.members[0].address) == Vote.NO


def test_a_vote_after_the_deadline_shows_the_contracts_named_reason(sim, browser):
    a = browser(sim.members[0])
    pid = submit(a, sim)
    page = a.prepare("vote", proposal=pid, choice="yes")  # confirmed while voting was open
    sim.end_vote(pid)
    done = a.confirm(page)
    assert done.status_code == 409
    words = text_of(done.text)
    assert "the voting period is over" in words and "MemberVotingClosed" in words
    # and the page no longer offers a vote, saying why in the contract's words
    proposal = a.get(f"/proposals/{pid}").text
    assert 'name="choice"' not in proposal
    assert "the voting period is over" in text_of(proposal)


def test_no_button_the_contracts_would_refuse(sim, browser):
    a = browser(sim.members[0])
    pid = submit(a, sim)
    html = a.get(f"/proposals/{pid}").text
    assert 'value="finalize"' not in html and "the voting period is still running" in text_of(html)
    assert html.count('name="choice"') == 3 and 'value="cancel"' in html  # own proposal, nobody voted yet
    a.do("vote", proposal=pid, choice="abstain")
    html = a.get(f"/proposals/{pid}").text
    assert 'name="choice"' not in html and 'value="cancel"' not in html
    assert "already voted" in text_of(html)
    b = browser(sim.members[1])
    assert 'value="cancel"' not in b.get(f"/proposals/{pid}").text  # not the proposer
    sim.end_vote(pid)
    assert 'value="finalize"' in a.get(f"/proposals/{pid}").text
    # asking for a refused action directly gets the contracts' refusal, no confirmation
    r = a.prepare("vote", proposal=pid, choice="yes")
    assert r.status_code == 409 and 'action="/act/' not in r.text
    assert "MemberVotingClosed" in r.text  # the contract checks the deadline first


def test_the_owner_edits_a_policy_and_the_chain_enforces_it(sim, browser):
    a, b = browser(sim.members[0]), browser(sim.members[1])
    name = sim.names[0]
    assert 'id="policy-editor"' in a.get(f"/datasets/{name}").text
    assert 'id="policy-editor"' not in b.get(f"/datasets/{name}").text  # not the owner
    page = a.prepare("policy", dataset=name, purposes="research, public-health", proposals="any", expires="2031-01-31",
                     epsilon="2.5")
    words = text_of(page.text)
    assert "DatasetRegistry.setPolicy" in words and "purposes research, public-health" in words
    assert "expires 2031-01-31" in words and "privacy budget ε 2.5" in words
    assert "Sent and mined" in a.confirm(page).text
    policy = sim.fed().registry.dataset(name).policy
    assert set(policy.purposes) == {purpose_hash("research"), purpose_hash("public-health")}
    assert policy.max_epsilon_milli == 2500
    html = text_of(a.get(f"/datasets/{name}").text)
    assert "purposes research, public-health" in html
    assert html.count("any approved proposal") >= 2  # two versions in the history
    pid = submit(b, sim)  # a diagnosis plan
    target = text_of(a.get(f"/proposals/{pid}").text)
    assert "its policy would refuse it: purpose not allowed" in target


def test_bad_input_is_named_and_nothing_is_sent(sim, browser):
    a = browser(sim.members[0])
    head = sim.chain.block_number
    r = a.prepare("propose", files={"plan": ("plan.toml", b'name = "x"\nrounds = "many"\n', "text/plain")})
    assert r.status_code == 400 and "rounds" in text_of(r.text)
    r = a.prepare("vote", proposal="1; drop", choice="yes")
    assert r.status_code == 400 and "positive whole number" in text_of(r.text)
    r = a.prepare("teleport")
    assert r.status_code == 400 and "unknown action" in text_of(r.text)
    r = a.prepare("policy", dataset=sim.names[0], purposes="", proposals="any")
    assert r.status_code == 400 and "purpose" in text_of(r.text)
    assert sim.chain.block_number == head


def test_rounds_live_with_rejections_chart_and_replay_verdicts(sim, browser):
    a = browser(sim.members[0])
    plan = demo_plan(sim.data.hospitals, seed=7).with_changes(
        rounds=2, min_participants=2,
        auditors=["0x" + sim.auditor.x25519_public.hex(), "0x" + sim.members[0].x25519_public.hex()])
    pid = uc_proposals.propose(sim.fed(sim.members[0]), sim.store, plan).id
    for m in sim.members:
        uc_proposals.vote(sim.fed(m), pid, "yes")
    sim.end_vote(pid)
    uc_proposals.finalize(sim.fed(sim.ops), pid)
    nodes, coord = sim.nodes(), sim.coordinator()
    sim.run_round(pid, 1, nodes, coord)
    html = a.get("/rounds").text
    assert html.count('class="round-row"') == 1 and 'data-phase="closed"' in html
    assert html.count("<circle") == 1 and "<polyline" in html and "accuracy per round" in html
    words = text_of(html)
    for name in sim.names:
        assert name in words
    sim.run_round(pid, 2, nodes, coord)
    html = a.get("/rounds").text
    assert html.count('class="round-row"') == 2 and html.count("<circle") == 2
    assert "none" in text_of(html)  # every update was used: nobody rejected
    # a rejection is read from the round's scores document, with its reason, as the coordinator wrote it
    real = a.state.try_document
    c = sim.members[2].address.lower()

    def with_rejection(cid, sha256, max_size=1 << 24):
        doc, err = real(cid, sha256, max_size)
        return ({**doc, "rejected": {c: "DECRYPT_FAILED: the envelope does not open"}} if doc else doc), err

    a.state.try_document = with_rejection
    assert "hospital-c (0x3c44…93bc): DECRYPT_FAILED: the envelope does not open" in text_of(a.get("/rounds").text)
    a.state.try_document = real
    # the audit: replay with hospital-a's key (the plan names it as an auditor)
    assert a.get("/audit").status_code == 200
    r = a.client.post("/audit/replay", data={"csrf": a.csrf()}, follow_redirects=False)
    assert r.status_code == 303
    a.console.audit.wait(120)
    page = a.get("/audit").text
    assert page.count('data-status="VERIFIED"') == 2, text_of(page)
    # a member whose key the plan does not name cannot open the updates: no round is VERIFIED for it
    b = browser(sim.members[1])
    b.client.post("/audit/replay", data={"csrf": b.csrf()})
    b.console.audit.wait(120)
    assert 'data-status="VERIFIED"' not in b.get("/audit").text


def test_motions_with_their_votes(sim, browser):
    a, b = browser(sim.members[0]), browser(sim.members[1])
    newcomer = dev_identity(7, name="st-mary")
    done = a.do("motion-admit", name="st-mary", address=newcomer.address, x25519="0x" + newcomer.x25519_public.hex())
    assert "Sent and mined" in done.text, text_of(done.text)
    assert "Sent and mined" in b.do("motion-vote", motion=1, support="no").text
    page = text_of(a.get("/members").text)
    assert "Motion 1: admit" in page and "hospital-b (0x7099…79c8) no" in page
    html = b.get("/members").text
    assert 'name="support"' not in html and "already voted" in text_of(html)


def test_the_pulse_moves_when_the_chain_has_new_events(sim, browser):
    a = browser(sim.members[0])
    before = a.get("/pulse").json()
    sim.chain.mine(2)
    mined = a.get("/pulse").json()
    assert mined["block"] == before["block"] + 2 and mined["events"] == before["events"]
    uc_datasets.set_policy(sim.fed(sim.members[1]), sim.names[1], uc_datasets.make_policy(purposes=["research"]))
    after = a.get("/pulse").json()
    assert after["events"] > before["events"]


def test_a_page_is_stamped_with_the_events_it_shows_not_later_ones(sim, browser, monkeypatch):
    """An event mined while a page is being built must make the browser refresh it.

    The page is stamped (``data-events``) with the block of the read model its content came
    from; stamping it with a later read would match the pulse and the new event would never
    appear (a round's metric recorded just after its close went missing from the live chart).
    """
    import fedchain.console.views as views

    a = browser(sim.members[0])
    shown = a.get("/pulse").json()["events"]
    real = views.rounds

    def rounds_then_an_event(state, model, head):
        rows = real(state, model, head)
        uc_datasets.set_policy(sim.fed(sim.members[1]), sim.names[1], uc_datasets.make_policy(purposes=["research"]))
        return rows

    monkeypatch.setattr(views, "rounds", rounds_then_an_event)
    html = a.get("/rounds").text
    stamped = int(re.search(r'data-events="(\d+)"', html).group(1))
    assert stamped == shown
    assert a.get("/pulse").json()["events"] > stamped  # so the browser's pulse sees a difference and refreshes


def test_the_chart_plots_points_and_escapes_its_labels():
    svg = str(line_chart([(1, 0.5), (2, 0.75), (3, 0.9)], title="<b>acc</b>", y_label="a&b", y_range=(0, 1)))
    assert svg.count("<circle") == 3 and "<polyline" in svg
    assert "&lt;b&gt;acc&lt;/b&gt;" in svg and "<b>" not in svg and "a&amp;b" in svg
    assert "style=" not in svg  # the CSP admits no inline styles
    empty = str(line_chart([], title="t", y_label="y"))
    assert "no round has a recorded metric yet" in empty and "<circle" not in empty


@pytest.mark.parametrize("who", ["nobody", "outsider"])
def test_read_only_consoles_render_without_actions(sim, browser, who):
    ident = None if who == "nobody" else sim.auditor
    r = browser(ident)
    pid = uc_proposals.propose(sim.fed(sim.members[0]), sim.store, sim.plan(
        demo_plan(sim.data.hospitals, seed=7))).id
    for path in [p.path for p in PAGES] + [f"/proposals/{pid}", f"/datasets/{sim.names[0]}"]:
        html = r.get(path).text
        assert "chain-action" not in html and "/prepare" not in html, path
        assert "Read-only" in html
