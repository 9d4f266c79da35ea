"""The use cases of fedchain governance, written once (Substra's service layer).

Each action a member takes is one function here, typed against the small
protocols of :mod:`fedchain.usecases.ports` (a client per contract, a content
store). The CLI, the demo, the local network, the scripts, the console and the
tests call these; none of them repeats the steps.

* :mod:`~fedchain.usecases.datasets` — ``register`` a dataset (metadata document,
  pin, chain), ``set_policy``, ``revoke``; ``make_policy`` from a member's words;
* :mod:`~fedchain.usecases.proposals` — ``propose`` a plan (pinned, terms copied
  from it), ``vote``, ``finalize``, ``cancel``, ``fetch_plan`` (verified);
* :mod:`~fedchain.usecases.members` — membership motions;
* :mod:`~fedchain.usecases.admission` — ``check`` whether a dataset may be used
  for a proposal, and if not the rule that refuses it;
* :mod:`~fedchain.usecases.refusals` — the stable refusal codes and their one wording;
* :mod:`~fedchain.usecases.preflight` — ``ask`` the contracts whether they would accept
  an action now (a dry run of the use case itself: nothing is signed or sent).
* :mod:`~fedchain.usecases.scores` — contribution scores accumulated per member over every
  closed round (``accumulate``), from the scores documents the chain hashes;
* :mod:`~fedchain.usecases.models` — the trained models: every closed round's
  aggregate (``closed_models``, ``select``) and fetching one verified (``pull_to_file``);
* :mod:`~fedchain.usecases.releases` — release a model by vote under its card
  (``propose``, ``vote``, ``finalize``, ``cancel``, ``released_record``) and mark the
  models of a revoked dataset's lineage (``mark_withdrawn``).
* :mod:`~fedchain.usecases.privacy` — the ε ledger: what a round of a DP plan spends
  (``expected_spend``), whether a budget takes it (``check_budget``), whether a commitment
  states it (``privacy_mismatch``), a dataset's ``budget`` (allowed, spent, left).

The hospital node's and the coordinator's own use cases (train-seal-pin-commit an
update; collect-verify-aggregate-close a round) live with those roles, on top of
this layer (:mod:`fedchain.node.commit`, :mod:`fedchain.coordinator.runner`).
"""

from fedchain.usecases import (admission, datasets, members, models, preflight, privacy, proposals, refusals,
                               releases)
from fedchain.usecases.admission import AdmissionCheck
from fedchain.usecases.refusals import Refused, phrase, sentence

__all__ = ["AdmissionCheck", "Refused", "admission", "datasets", "members", "models", "phrase", "preflight", "privacy",
           "proposals", "refusals", "releases", "sentence"]
