"""The HTML audit report: self-contained, escaped, deterministic, and it really renders in a browser."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fedchain.coordinator.audit.history import History
from fedchain.coordinator.audit.report import render_report, write_report
from fedchain.cli import main as cli_main
from fedchain.coordinator.audit.trail import TRAIL_FORMAT, TrailEvent
from fedchain.errors import FedchainError

# Importing replay pulls in torch; the dataclasses are all the report needs from it.
replay = pytest.importorskip("fedchain.coordinator.audit.replay")
ReplayReport, RoundVerdict = replay.ReplayReport, replay.RoundVerdict

HOSTILE = "St. Mary <b>General</b>"
A = "0x" + "a1" * 20
B = "0x" + "b2" * 20
C = "0x" + "c3" * 20
COORD = "0x" + "99" * 20
PARAMS = {"quorum_bps": 5000, "approval_bps": 6667}


def h32(tag: str) -> str:
    return "0x" + hashlib.sha256(tag.encode()).hexdigest()


PURPOSE = "sepsis early warning"
PURPOSE_HASH = h32(PURPOSE)
DATASETS = {A: h32("ds-a"), B: h32("ds-b"), C: h32("ds-c")}


class _Chain:
    """Hand-made events in chain order, one transaction each."""

    def __init__(self) -> None:
        self.events: list[TrailEvent] = []
        self.block = 10

    def emit(self, event: str, gas: int = 50_000, **args) -> None:
        self.block += 1
        n = len(self.events)
        self.events.append(TrailEvent(block=self.block, timestamp=1_700_000_000 + 12 * self.block,
                                      tx="0x%064x" % (n + 1), log_index=0, contract="test", event=event,
                                      args=args, gas_used=gas))


def synthetic_events() -> list[TrailEvent]:
    ch = _Chain()
    ch.emit("CoordinatorChanged", previous="0x" + "00" * 20, current=COORD)
    for i, (addr, name) in enumerate([(A, HOSTILE), (B, "Northside Clinic"), (C, "Lakeview Hospital")]):
        ch.emit("MemberAdmitted", account=addr, name=name, x25519=h32(f"key-{i}"), seq=i + 1)
    for addr, did in DATASETS.items():
        ch.emit("DatasetRegistered", id=did, owner=addr, name=f"icu-{addr[2:6]}", metadataCid="bafymeta",
                metadataSha256=h32("meta"), schemaHash=h32("schema"), rowCount=1000)
        ch.emit("PolicySet", id=did, version=1, policy={
            "purposes": [PURPOSE_HASH], "proposalIds": [], "anyApprovedProposal": True,
            "requesters": [], "expiry": 0, "maxEpsilonMilli": 0})
    # Proposal 1: approved unanimously.  Proposal 2: rejected (1 yes, 1 no, 1 abstain).
    for pid, purpose in ((1, PURPOSE), (2, "readmission risk")):
        ch.emit("ProposalSubmitted", id=pid, proposer=A, planCid=f"bafyplan{pid}", planSha256=h32(f"plan{pid}"),
                purpose=purpose, purposeHash=h32(purpose), targets=list(DATASETS.values()), owners=list(DATASETS), rounds=3,
                minParticipants=2, roundDuration=20, deadline=ch.block + 10, eligible=3)
    for voter in (A, B, C):
        ch.emit("Voted", id=1, voter=voter, choice=1)
    for voter, choice in ((A, 1), (B, 2), (C, 3)):
        ch.emit("Voted", id=2, voter=voter, choice=choice)
    ch.emit("ProposalFinalized", id=1, state=2, yes=3, no=0, abstain=0)
    ch.emit("ProposalFinalized", id=2, state=3, yes=1, no=1, abstain=1)
    accuracy = {A: [700_000, 780_000, 820_000], B: [650_000, 760_000, 800_000], C: [600_000, 700_000, 790_000]}
    for rnd in (1, 2, 3):
        ch.emit("RoundOpened", gas=80_000, proposalId=1, round=rnd, deadline=ch.block + 20)
        members = (A, B, C) if rnd < 3 else (A, B)
        for m in members:
            ch.emit("UpdateCommitted", gas=120_000 + rnd * 1000, proposalId=1, round=rnd, member=m,
                    datasetId=DATASETS[m], cid=f"bafyupd{rnd}{m[2:6]}", updateSha256=h32(f"u{rnd}{m}"),
                    sampleCount=500)
        ch.emit("RoundClosed", gas=150_000, proposalId=1, round=rnd, aggregateCid=f"bafyaggregate{rnd}",
                aggregateSha256=h32(f"agg{rnd}"), scoresCid=f"bafyscores{rnd}", scoresSha256=h32(f"sc{rnd}"),
                committed=len(members))
        for m in members:
            ch.emit("EvaluationSubmitted", proposalId=1, round=rnd, member=m, datasetId=DATASETS[m],
                    metricPpm=accuracy[m][rnd - 1], sampleCount=200)
        ch.emit("GlobalMetricRecorded", proposalId=1, round=rnd, metricPpm=sum(accuracy[m][rnd - 1] for m in members) // len(members))
    return ch.events


def synthetic_report() -> ReplayReport:
    return ReplayReport(rounds=[
        RoundVerdict(1, 1, "VERIFIED", aggregate_cid="bafyaggregate1", participants=sorted([A, B, C]),
                     scores={A: 0.41, B: 0.35, C: 0.24}),
        RoundVerdict(1, 2, "DISCREPANCY",
                     problems=[f"aggregate differs from what the committed updates give: chain sha256 {h32('agg2')}, "
                               f"recomputed {h32('other')}",
                               f"update of {C} was rejected (bad envelope) but verifies"],
                     aggregate_cid="bafyaggregate2", participants=sorted([A, B]), rejected={C: "bad envelope"},
                     scores={A: 0.55, B: 0.45}),
        RoundVerdict(1, 3, "VERIFIED", aggregate_cid="bafyaggregate3", participants=sorted([A, B]),
                     scores={A: 0.6, B: 0.4}),
    ])


@pytest.fixture(scope="module")
def history() -> History:
    h = History(synthetic_events(), PARAMS)
    assert not h.problems
    assert [h.proposals[1].final_state, h.proposals[2].final_state] == ["Approved", "Rejected"]
    assert len(h.rounds) == 3 and h.members[A].name == HOSTILE
    return h


@pytest.fixture(scope="module")
def page(history) -> str:
    return render_report(history, synthetic_report(), title="Consortium audit <test>")


def _row(page: str, pid: int, rnd: int) -> str:
    m = re.search(rf'<tr id="round-{pid}-{rnd}"[^>]*>(.*?)</tr>', page, re.S)
    assert m, f"no table row for proposal {pid} round {rnd}"
    return m.group(1)


def _embedded_svgs(page: str) -> list[bytes]:
    return [base64.b64decode(d) for d in re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)]


def test_page_is_self_contained(page):
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    # Every src/href is an inline data: URI or an in-page anchor; nothing is fetched.
    refs = re.findall(r'\b(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', page, re.I)
    assert refs
    for ref in refs:
        assert ref.startswith(("data:", "#")), ref
    assert not re.search(r"https?://", page.replace("http://www.w3.org/", "")), "page names an external URL"
    assert "@import" not in page and "url(" not in page
    assert "Content-Security-Policy" in page


def test_verdicts_per_round(page):
    assert "VERIFIED" in _row(page, 1, 1)
    r2 = _row(page, 1, 2)
    assert "DISCREPANCY" in r2 and 'class="badge bad"' in r2
    assert "aggregate differs" in r2 and "bafyaggregate2" in r2
    assert "bad envelope" in r2  # the rejected update and why
    assert "VERIFIED" in _row(page, 1, 3) and "bafyaggregate3" in _row(page, 1, 3)
    assert "Discrepancies found" in page


def test_member_names_escaped(page):
    escaped = "St. Mary &lt;b&gt;General&lt;/b&gt;"
    assert escaped in page
    assert "<b>General</b>" not in page
    assert "Consortium audit &lt;test&gt;" in page
    # Names instead of bare addresses, in tables and in problem sentences.
    assert "Northside Clinic" in _row(page, 1, 2) and "Lakeview Hospital" in _row(page, 1, 2)


def test_governance_section(page):
    gov = page[page.index('id="governance"'):]
    assert "Lakeview Hospital" in gov and "icu-" in gov
    assert "sepsis early warning" in gov  # the policy's purpose hash resolved to the proposal's text
    assert "Approved" in gov and "Rejected" in gov
    assert "1 / 1 / 1" in gov and "3 / 0 / 0" in gov


def test_plots_embedded(page):
    svgs = _embedded_svgs(page)
    assert len(svgs) == 6  # accuracy, participants, scores, accumulated scores, votes, gas
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg")
        assert b"<script" not in svg and b"<b>General" not in svg


def test_deterministic(history):
    a = render_report(history, synthetic_report(), title="t")
    b = render_report(history, synthetic_report(), title="t")
    assert a == b


def test_rendering_leaves_matplotlib_alone(history):
    import matplotlib

    backend, rc = matplotlib.get_backend(), dict(matplotlib.rcParams)
    render_report(history, synthetic_report(), title="t")
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == rc


def test_without_replay(history):
    html = render_report(history, None, title="t", note="no store here")
    assert "Not replayed" in html and "no store here" in html
    assert "CLOSED" in _row(html, 1, 1)
    assert len(_embedded_svgs(html)) == 4  # no contribution scores without the replay
    assert "Contribution scores come from the replay" in html


def test_empty_history():
    for report in (None, ReplayReport()):
        html = render_report(History([]), report, title="empty")
        assert "No rounds yet" in html
        assert "No members admitted yet" in html and "No proposals submitted yet" in html
        assert _embedded_svgs(html) == []


def test_hostile_names_do_not_break_anything():
    ch = _Chain()
    nasty = ["</script><script>alert(1)</script>", "$\\frac{a", "_hidden", "\u202eevil\u202c\x00\n--> <!--",
             "x" * 500, "Northside Clinic", "Northside Clinic"]
    addrs = ["0x" + f"{i + 1:02x}" * 20 for i in range(len(nasty))]
    for i, (addr, name) in enumerate(zip(addrs, nasty)):
        ch.emit("MemberAdmitted", account=addr, name=name, x25519=h32(str(i)), seq=i)
    ch.emit("ProposalSubmitted", id=1, proposer=addrs[0], planCid="bafy<i>", planSha256=h32("p"),
            purpose="<img src=x onerror=alert(1)>", purposeHash=h32("q"), targets=[], rounds=1,
            minParticipants=1, roundDuration=5, deadline=99, eligible=7)
    for a in addrs:
        ch.emit("Voted", id=1, voter=a, choice=1)
    ch.emit("ProposalFinalized", id=1, state=2, yes=7, no=0, abstain=0)
    ch.emit("RoundOpened", proposalId=1, round=1, deadline=ch.block + 5)
    for a in addrs:
        ch.emit("UpdateCommitted", proposalId=1, round=1, member=a, datasetId=h32("nope"), cid="c", updateSha256=h32("u"),
                sampleCount=1)
        ch.emit("EvaluationSubmitted", proposalId=1, round=1, member=a, datasetId=h32("nope"), metricPpm=500_000,
                sampleCount=1)
    h = History(ch.events, PARAMS)
    rep = ReplayReport(rounds=[RoundVerdict(1, 1, "DISCREPANCY", problems=["<script>x</script> by " + addrs[0]],
                                            participants=addrs, scores={a: 0.1 for a in addrs})])
    html = render_report(h, rep, title="x")
    lowered = html.lower()
    assert "<script" not in lowered and "<img src=x" not in lowered and "<i>" not in html
    assert "\u202e" not in html and "\x00" not in html
    assert len(_embedded_svgs(html)) == 6


def test_write_report_is_atomic(tmp_path):
    out = tmp_path / "sub" / "report.html"
    write_report(out, "<p>one</p>")
    write_report(out, "<p>two</p>")
    assert out.read_text() == "<p>two</p>"
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    with pytest.raises(FedchainError):
        write_report(tmp_path / "sub" / "report.html" / "x.html", "<p>no</p>")


_CONTRACT_OF = {
    "CoordinatorChanged": "Consortium", "MemberAdmitted": "Consortium", "DatasetRegistered": "DatasetRegistry",
    "PolicySet": "DatasetRegistry", "ProposalSubmitted": "Proposals", "Voted": "Proposals",
    "ProposalFinalized": "Proposals",
}


def _write_trail(path: Path, events: list[TrailEvent]) -> None:
    """A trail file of the synthetic events (each with its contract and a made-up block hash: unanchored)."""
    names = ("Consortium", "DatasetRegistry", "Proposals", "Rounds")
    header = {"kind": "header", "format": TRAIL_FORMAT, "chain_id": 31337, "deploy_block": 1,
              "addresses": {n: "0x%040x" % (i + 0x77) for i, n in enumerate(names)}, "params": PARAMS}
    with open(path, "w") as f:
        f.write(json.dumps(header) + "\n")
        for ev in events:
            rec = ev.to_record()
            rec.update(contract=_CONTRACT_OF.get(ev.event, "Rounds"), block_hash=h32(f"block {ev.block}"))
            f.write(json.dumps(rec) + "\n")
        f.write(json.dumps({"kind": "checkpoint", "to_block": 10_000}) + "\n")


def report_cli(*, out, trail, home=None):
    """``fedchain audit report`` through the real entry point; FedchainErrors surface as exit 1."""
    argv = ["audit", "report", "--out", str(out)]
    if trail is not None:
        argv += ["--trail", str(trail)]
    if home is not None:
        argv += ["--home", str(home)]
    return cli_main(argv)


def test_report_cli_from_trail(tmp_path, capsys):
    trail = tmp_path / "trail.jsonl"
    _write_trail(trail, synthetic_events())
    out = tmp_path / "report.html"
    assert report_cli(out=out, trail=trail) == 0
    assert str(out) in capsys.readouterr().out
    html = out.read_text()
    assert "Not replayed" in html and "auditor" in html  # says what is missing for a replay
    assert "St. Mary &lt;b&gt;General&lt;/b&gt;" in html and "CLOSED" in _row(html, 1, 3)
    assert report_cli(out=out, trail=tmp_path / "missing.jsonl") == 1
    assert "does not exist" in capsys.readouterr().err
    # A store and an auditor file next to the trail: the replay is attempted; a bad one is reported on the page.
    (tmp_path / "store").mkdir()
    (tmp_path / "auditor.dev.json").write_text("{}")
    assert report_cli(out=out, trail=trail) == 0
    html = out.read_text()
    assert "Not replayed" in html and "auditor.dev.json" in html
    assert "no verdicts" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert report_cli(out=out, trail=bad) == 1


# -- a real browser ---------------------------------------------------------------------

def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (CI=true): run scripts/install-chromium in the test set-up")
        pytest.skip("chromium is not installed; run scripts/install-chromium to enable the browser test")
    return path


def test_renders_in_headless_chromium(page, tmp_path):
    import numpy as np
    from matplotlib.image import imread

    chromium = _chromium()
    html_file = tmp_path / "report.html"
    write_report(html_file, page)
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory(prefix="fedchain-chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--screenshot={shot}", "--window-size=1280,2000", html_file.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert shot.exists() and shot.stat().st_size > 10_000, (
        f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    img = imread(shot)  # float RGBA in [0, 1]
    assert img.shape[:2] == (2000, 1280)
    rgb = img[..., :3]
    non_white = (rgb < 0.94).any(axis=-1).mean()
    assert non_white > 0.05, f"only {non_white:.1%} of the screenshot is not white"
    colours = np.unique((rgb * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"only {len(colours)} distinct colours"
    # The page really was styled: the red DISCREPANCY badge (#b3261e) and a plot are on screen.
    red = (np.abs(rgb - np.array([0xB3, 0x26, 0x1E]) / 255).max(axis=-1) < 0.04).sum()
    assert red > 100, "no DISCREPANCY badge colour in the screenshot"


def test_report_cli_live_chain(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    import fedchain.cli.common as common
    from fedchain.contracts.bindings import Chain, FounderSpec, Vote
    from fedchain import usecases as uc
    from fedchain.contracts.models import Policy
    from fedchain.identity import dev_identity
    from fedchain.ipfs.local import LocalStore
    from fedchain.sample_data import demo_plan, demo_schema
    from fedchain.schema import parse_schema

    chain = Chain.connect("eth-tester://")
    members = [dev_identity(i, name=n) for i, n in enumerate([HOSTILE, "Northside Clinic", "Lakeview Hospital"])]
    ops = dev_identity(4, name="ops")
    dep = chain.deploy(chain.dev_accounts[0], founders=[FounderSpec(m.name, m.address, m.x25519_public) for m in members],
                       coordinator=ops.address, voting_period_blocks=3, quorum_bps=5000, approval_bps=6000)
    fed = chain.attach(dep)
    store = LocalStore(tmp_path / "store", fsync=False)
    schema = parse_schema(demo_schema())
    names = [f"ds-{m.address[2:8]}" for m in members]
    for m, name in zip(members, names):
        uc.datasets.register(fed.as_(m.account), store, name=name, schema=schema, n_rows=20, description=name,
                            policy=Policy(purposes=["diagnosis"], any_approved_proposal=True))
    plan = demo_plan(seed=3).with_changes(datasets=names, rounds=2, min_participants=2, round_deadline_blocks=10)
    pid = uc.proposals.propose(fed.as_(members[0].account), store, plan).id
    for m, v in zip(members, (Vote.YES, Vote.YES, Vote.NO)):
        uc.proposals.vote(fed.as_(m.account), pid, v)
    chain.mine(4)
    uc.proposals.finalize(fed.as_(members[0].account), pid)

    session = common.Session(home=tmp_path, config=SimpleNamespace(store=str(tmp_path / "store")), chain=chain, fed=fed)
    import fedchain.cli.audit as audit_cli

    monkeypatch.setattr(audit_cli, "connect", lambda home: session)
    out = tmp_path / "live.html"
    assert report_cli(out=out, trail=None, home=tmp_path) == 0
    html = out.read_text()
    assert "St. Mary &lt;b&gt;General&lt;/b&gt;" in html and "Approved" in html and "No rounds yet" in html
    assert "auditor" in html  # says how to get verdicts
