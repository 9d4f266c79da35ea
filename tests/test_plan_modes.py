"""Aggregation modes are plan choices: plain / secagg / he, with the rules each imposes."""

from __future__ import annotations

import pytest

from fedchain.plan import PlanError, parse_plan, plan_from_dict
from fedchain.plandoc import describe, template
from tests.test_plan import base_dict

HE = {"decryptor": "0x" + "Ab" * 20, "context_cid": "Qm" + "a" * 44, "context_sha256": "0x" + "1" * 64}


def _problems(d: dict) -> dict[str, str]:
    with pytest.raises(PlanError) as e:
        plan_from_dict(d)
    return {p.field: p.message for p in e.value.problems}


def test_plain_plan_bytes_do_not_mention_modes_and_other_modes_do():
    plain = plan_from_dict(base_dict())
    raw_plain = plain.to_canonical_bytes()
    assert plain.mode == "plain" and b'"mode":"plain"' not in raw_plain  # ("mode" of [privacy] is another key)
    assert b'"secagg"' not in raw_plain and b'"he"' not in raw_plain
    he = plan_from_dict(dict(base_dict(), mode="he", he=HE))
    raw = he.to_canonical_bytes()
    assert b'"mode":"he"' in raw and he.sha256 != plain.sha256
    assert he.he.decryptor == HE["decryptor"].lower()
    # what is pinned parses back to the same plan
    assert parse_plan(raw) == he
    sa = plan_from_dict(dict(base_dict(), mode="secagg", datasets=["a", "b", "c"], secagg={"max_dropouts": 1}))
    assert b'"max_dropouts":1' in sa.to_canonical_bytes()


@pytest.mark.parametrize("mode", ["secagg", "he"])
def test_rules_that_need_individual_updates_are_refused(mode):
    extra = {"he": HE} if mode == "he" else {}
    for strategy in ({"name": "median"}, {"name": "krum", "byzantine": 1}):
        d = dict(base_dict(), mode=mode, strategy=strategy, min_participants=2, datasets=list("abcde"), **extra)
        probs = _problems(d)
        assert "individual updates" in probs["strategy.name"], probs
    assert "not available" in _problems(dict(base_dict(), mode=mode, strategy={"name": "fedadam", "server_lr": 0.1}, **extra))["strategy.name"]
    for robust in ({"foolsgold": True}, {"max_weight_share": 0.5}):
        probs = _problems(dict(base_dict(), mode=mode, robust=robust, **extra))
        assert "individual updates" in next(iter(probs.values()))
    # norm bounding runs at the node: allowed
    ok = plan_from_dict(dict(base_dict(), mode=mode, robust={"norm_bound": 3.0}, **extra))
    assert ok.robust.norm_bound == 3.0
    # the same rules are fine in plain mode
    plan_from_dict(dict(base_dict(), strategy={"name": "median"}))


def test_he_needs_a_decryptor_and_a_pinned_context():
    probs = _problems(dict(base_dict(), mode="he"))
    assert set(probs) == {"he.decryptor", "he.context_cid", "he.context_sha256"}
    probs = _problems(dict(base_dict(), mode="he", he=dict(HE, decryptor="0x12")))
    assert "he.decryptor" in probs


def test_secagg_threshold_must_exceed_half_and_cover_min_participants():
    d = dict(base_dict(), mode="secagg", datasets=list("abcdef"))
    assert plan_from_dict(dict(d, secagg={"max_dropouts": 2})).secagg.max_dropouts == 2
    assert "exceed half" in _problems(dict(d, secagg={"max_dropouts": 3}))["secagg.max_dropouts"]
    assert "min_participants" in _problems(dict(d, min_participants=5, secagg={"max_dropouts": 2}))["secagg.max_dropouts"]
    assert "deadline" in _problems(dict(d, round_deadline_blocks=30, secagg={"phase_blocks": 10}))["secagg.phase_blocks"]
    assert plan_from_dict(dict(d, round_deadline_blocks=31, secagg={"phase_blocks": 10})).secagg.phase_blocks == 10


def test_template_and_show_speak_of_modes():
    text = template("logreg")
    assert "[secagg]" in text and "[he]" in text and 'mode = "plain"' in text
    parse_plan(text.encode(), fmt="toml")
    words = dict(describe(plan_from_dict(dict(base_dict(), mode="he", he=HE))))
    assert "homomorphic" in words["privacy"] and HE["decryptor"].lower() in words["privacy"]
    words = dict(describe(plan_from_dict(dict(base_dict(), mode="secagg", datasets=list("abc"),
                                              secagg={"max_dropouts": 1}))))
    assert "threshold 2 of 3" in words["privacy"]
