"""Plans for people: the reference page, commented templates, and plain words.

Everything here is generated from the validator itself -- the plan's JSON
Schema (:data:`fedchain.plan.PLAN_JSON_SCHEMA`, built by pydantic from the
models in :mod:`fedchain.plan`) and :data:`fedchain.plan.CROSS_FIELD_RULES`
-- so the page, the templates and the validator cannot disagree:

* :func:`reference_markdown` is ``fedchain/docs/plan.md`` (a test keeps the
  committed page equal to it; ``fedchain plan reference -o
  fedchain/docs/plan.md`` regenerates it);
* :func:`template` is what ``fedchain plan init --model KIND`` writes: every
  field with its description as a comment, and example values that validate
  as written;
* :func:`describe` is what ``fedchain plan show`` prints: what a member votes
  on, in plain words.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from fedchain.errors import ConfigError
from fedchain.plan import (
    BYTES_PER_PARAMETER,
    CROSS_FIELD_RULES,
    DEFAULT_MAX_MODEL_PARAMETERS,
    HARD_MAX_MODEL_PARAMETERS,
    MAX_PLAN_BYTES,
    MODEL_KINDS,
    PLAN_JSON_SCHEMA,
    PLAN_VERSION,
    PATTERN_WORDS,
    CNNSpec,
    LogRegSpec,
    MLPSpec,
    ModelSize,
    PlanStandardization,
    SGDSpec,
    TrainingPlan,
)

__all__ = ["reference_markdown", "template", "describe", "TEMPLATE_KINDS"]

TEMPLATE_KINDS = MODEL_KINDS

# Tables of the plan, in the order the page and the templates show them.
_TABLES = ("model", "optimizer", "strategy", "preprocessing", "limits", "robust", "contribution", "privacy",
           "secagg", "he")
_DISCRIMINATORS = {"model": "kind", "optimizer": "name", "strategy": "name", "preprocessing": "standardize"}


def _defs() -> dict[str, Any]:
    return PLAN_JSON_SCHEMA["$defs"]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return _defs()[ref.rsplit("/", 1)[1]] if ref else node


def _variants(table: str) -> list[dict[str, Any]]:
    """The schemas of a table's variants (one for ``limits``)."""
    node = PLAN_JSON_SCHEMA["properties"][table]
    if "oneOf" in node:
        return [_resolve(v) for v in node["oneOf"]]
    return [_resolve(node)]


def _tag(schema: dict[str, Any], table: str) -> str | None:
    key = _DISCRIMINATORS.get(table)
    return schema["properties"][key]["const"] if key else None


# --------------------------------------------------------------------------
# the reference page
# --------------------------------------------------------------------------


def _num(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10_000 else json.dumps(v)


def _bounds(node: dict[str, Any]) -> list[str]:
    out = []
    lo = (">=", node["minimum"]) if "minimum" in node else ((">", node["exclusiveMinimum"])
                                                           if "exclusiveMinimum" in node else None)
    hi = ("<=", node["maximum"]) if "maximum" in node else (("<", node["exclusiveMaximum"])
                                                           if "exclusiveMaximum" in node else None)
    if lo:
        out.append(f"{lo[0]} {_num(lo[1])}")
    if hi:
        out.append(f"{hi[0]} {_num(hi[1])}")
    if "pattern" in node:
        out.append(PATTERN_WORDS.get(node["pattern"], f"matches `{node['pattern']}`"))
    return out


def _type_text(node: dict[str, Any]) -> str:
    if "const" in node:
        return f'`"{node["const"]}"`'
    if "enum" in node:
        return " \\| ".join(f'`"{v}"`' for v in node["enum"])
    t = node.get("type")
    if t == "array":
        item = node.get("items", {})
        words = f"list of {item.get('type', 'value')}s"
        n_lo, n_hi = node.get("minItems"), node.get("maxItems")
        if n_lo is not None and n_lo == n_hi:
            words += f", exactly {n_lo}"
        else:
            if n_lo:
                words += f", at least {n_lo}"
            if n_hi is not None:
                words += f", at most {_num(n_hi)}"
        each = _bounds(item)
        if each:
            words += ("; each of " if "pattern" in item else "; each ") + ", ".join(each)
        return words
    words = {"integer": "integer", "number": "number", "string": "string"}.get(str(t), str(t))
    extra = _bounds(node)
    return words + ((" of " if "pattern" in node else " ") + ", ".join(extra) if extra else "")


def _field_rows(schema: dict[str, Any], skip: set[str] = frozenset()) -> list[str]:
    rows = ["| key | value | required / default | meaning |", "| --- | --- | --- | --- |"]
    required = set(schema.get("required", ()))
    for key, node in schema["properties"].items():
        if key in skip:
            continue
        need = "required" if key in required else (
            f"default `{json.dumps(node['default'])}`" if "default" in node else "optional")
        desc = node.get("description", "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_text(node)} | {need} | {desc} |")
    return rows


def reference_markdown() -> str:
    """The plan reference page (``fedchain/docs/plan.md``), from the validator's schema."""
    top = PLAN_JSON_SCHEMA
    out = [
        "# Training plan reference",
        "",
        "<!-- Generated from fedchain/plan.py by fedchain/plandoc.py; do not edit by hand.",
        "     Regenerate: fedchain plan reference -o fedchain/docs/plan.md -->",
        "",
        "A training plan says what the consortium trains: the model, the data, the rounds, the aggregation "
        "strategy and its bounds. It is a TOML (or JSON) file of data only -- no code. Members vote on it; "
        "nodes train exactly what it says.",
        "",
        "```bash",
        "fedchain plan init --model mlp -o plan.toml   # a commented template that validates as written",
        "fedchain plan validate plan.toml              # every problem at once, with its line; never touches the chain",
        "fedchain plan show plan.toml                  # what the members vote on, in plain words",
        "fedchain proposal submit plan.toml --identity keys/me.json",
        "```",
        "",
        "Unknown keys are errors (a typo is never silently ignored), and types are strict: `true` is not a "
        "number and `\"5\"` is not an integer. Integers may be written where a number is expected.",
        "",
        "## Top-level keys",
        "",
        *_field_rows(top, skip=set(_TABLES)),
        "",
        "Tables: " + ", ".join(f"[`[{t}]`](#{t})" for t in _TABLES) + ".",
    ]
    for table in _TABLES:
        node = top["properties"][table]
        out += ["", f"## [{table}]", "", node.get("description", "")]
        variants = _variants(table)
        if table not in top.get("required", ()):
            out += ["", "Optional table."]
        if len(variants) == 1:
            out += ["", *_field_rows(variants[0])]
            if table == "contribution":
                sub = _resolve(PLAN_JSON_SCHEMA["$defs"]["ValidationSet"])
                out += ["", "### contribution.validation", "", sub.get("description", ""), "", *_field_rows(sub)]
            continue
        key = _DISCRIMINATORS[table]
        out += ["", f"`{key}` chooses one of: " + ", ".join(f'`"{_tag(v, table)}"`' for v in variants)
                + ". Each choice takes only its own keys."]
        for v in variants:
            tag = _tag(v, table)
            intro = v["properties"][key].get("description", "")
            out += ["", f"### {key} = \"{tag}\"", "", intro, "", *_field_rows(v)]
    out += [
        "",
        "## Rules across fields",
        "",
        *[f"- {rule}" for rule in CROSS_FIELD_RULES],
        "",
        "## Model size",
        "",
        f"The validator counts the model's trainable parameters from the `[model]` table (each is stored as "
        f"float32, {BYTES_PER_PARAMETER} bytes). The consortium default limit is "
        f"{ModelSize(DEFAULT_MAX_MODEL_PARAMETERS)}; a plan that needs more declares "
        f"`[limits] max_parameters`, which the members see in `fedchain plan show` and vote on. No plan may "
        f"declare more than {ModelSize(HARD_MAX_MODEL_PARAMETERS)}. A hospital node also refuses, before "
        "training and with the reason, a model above its own `[limits] max_model_parameters` "
        f"(node config; default {DEFAULT_MAX_MODEL_PARAMETERS:,}).",
        "",
        "## Canonical form and hash",
        "",
        "A plan is pinned in its canonical form: every default filled in, encoded with the JSON "
        "Canonicalization Scheme (RFC 8785: sorted keys, no whitespace, UTF-8, numbers in their shortest "
        "form). The sha256 of those bytes is what goes on chain; the same plan has the same hash however it "
        f"was written (`lr = 1` and `lr = 1.0` are one plan). Plan format version: {PLAN_VERSION}; at most "
        f"{MAX_PLAN_BYTES:,} bytes. The full JSON Schema: `fedchain plan schema`.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------
# templates
# --------------------------------------------------------------------------

_EXAMPLE_TOP = {
    "name": "my-plan",
    "purpose": "diagnosis",
    "datasets": ["hospital-a", "hospital-b", "hospital-c"],
    "rounds": 5,
    "min_participants": 2,
    "round_deadline_blocks": 40,
    "local_epochs": 2,
    "batch_size": 16,
    "seed": 7,
}
_EXAMPLE_MODELS = {
    "logreg": {"kind": "logreg", "in_features": 30, "n_classes": 2},
    "mlp": {"kind": "mlp", "in_features": 30, "n_classes": 2, "hidden": [32, 16]},
    "cnn": {"kind": "cnn", "input_shape": [1, 28, 28], "conv_channels": [8, 16], "hidden": [64], "n_classes": 10},
}
_EXAMPLE_ROBUST = {"norm_bound": 5.0, "foolsgold": True, "max_weight_share": 0.5}
_EXAMPLE_OPTIONAL = {
    "robust": _EXAMPLE_ROBUST,
    "secagg": {"max_dropouts": 1, "phase_blocks": 20},
    "he": {"decryptor": "0x" + "ab" * 20, "context_cid": "Qm" + "x" * 44, "context_sha256": "0x" + "0" * 64},
}
_EXAMPLE_PRIVACY = {"mode": "dpsgd", "epsilon": 1.0, "delta": 1e-5, "clipping_norm": 1.0, "accountant": "rdp"}
_EXAMPLE_TABLES = {
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "strategy": {"name": "fedavg"},
    "preprocessing": {"standardize": "none"},
}


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(v)


def _comment(text: str, indent: str = "") -> list[str]:
    return [indent + "# " + line for line in textwrap.wrap(text, 96 - len(indent))]


def _entry(key: str, node: dict[str, Any], value: Any, required: bool) -> list[str]:
    desc = node.get("description", "")
    if not required and "default" in node:
        desc += f" Optional (default {_toml(node['default'])})."
    return _comment(desc) + [f"{key} = {_toml(value)}"]


def template(kind: str = "logreg") -> str:
    """A commented TOML plan for a model kind; it validates as written."""
    if kind not in _EXAMPLE_MODELS:
        raise ConfigError(f"unknown model kind {kind!r} (choose one of: {', '.join(_EXAMPLE_MODELS)})")
    top = PLAN_JSON_SCHEMA
    required = set(top["required"])
    doc: dict[str, Any] = dict(_EXAMPLE_TOP, model=_EXAMPLE_MODELS[kind], **_EXAMPLE_TABLES)
    lines = [
        f"# fedchain training plan ({kind} model). Data only: every key is listed in fedchain/docs/plan.md.",
        "#   fedchain plan validate THIS_FILE   -- every problem at once, with its line",
        "#   fedchain plan show THIS_FILE       -- what the members vote on",
        "# Replace the example values (datasets, model sizes, ...) with yours.",
        "",
    ]
    for key, node in top["properties"].items():
        if key in _TABLES:
            continue
        value = doc[key] if key in doc else node.get("default")
        lines += _entry(key, node, value, key in required)
    for table in _TABLES:
        node = top["properties"][table]
        lines += ["", *_comment(node.get("description", "")), f"[{table}]"]
        variants = _variants(table)
        if table == "limits":
            field = variants[0]["properties"]["max_parameters"]
            lines += _comment(field["description"]) + [f"# max_parameters = {field['default']}"]
            continue
        if table == "contribution":  # the data-free default; loo/shapley also name a validation set
            for field in ("method", "permutations", "truncation", "metric"):
                node_f = variants[0]["properties"][field]
                lines += _comment(node_f["description"]) + [f"# {field} = {_toml(node_f['default'])}"]
            lines += _comment("validation = { csv_cid, csv_sha256, size, schema_cid, schema_sha256 }: the public "
                              "validation set loo and shapley evaluate on (see fedchain/docs/plan.md).")
            continue
        if table in _EXAMPLE_OPTIONAL:  # optional and off by default: shown commented out
            for field, example in _EXAMPLE_OPTIONAL[table].items():
                lines += _comment(variants[0]["properties"][field]["description"]) + [f"# {field} = {_toml(example)}"]
            continue
        if table == "privacy":  # off by default: an example of DP-SGD at a target epsilon, commented out
            for field, example in _EXAMPLE_PRIVACY.items():
                lines += _comment(variants[0]["properties"][field]["description"]) + [f"# {field} = {_toml(example)}"]
            continue
        values = doc[table]
        key = _DISCRIMINATORS[table]
        chosen = next(v for v in variants if _tag(v, table) == values[key])
        others = []
        for v in variants:
            if v is chosen:
                continue
            keys = [k for k in v["properties"] if k != key]
            others.append(f'"{_tag(v, table)}"' + (f" ({', '.join(keys)})" if keys else ""))
        lines += _comment(f"{key}: {chosen['properties'][key].get('description', '')} Other choices: "
                          + ", ".join(others) + ".")
        lines.append(f"{key} = {_toml(values[key])}")
        req = set(chosen.get("required", ()))
        for field, fnode in chosen["properties"].items():
            if field == key:
                continue
            value = values.get(field, fnode.get("default"))
            lines += _entry(field, fnode, value, field in req)
    text = "\n".join(lines) + "\n"
    return text


# --------------------------------------------------------------------------
# plain words
# --------------------------------------------------------------------------


def _model_words(plan: TrainingPlan) -> str:
    m = plan.model
    if isinstance(m, LogRegSpec):
        shape = f"logistic regression, {m.in_features} inputs"
    elif isinstance(m, MLPSpec):
        shape = f"fully connected network, {m.in_features} inputs, hidden layers {', '.join(map(str, m.hidden))}"
    elif isinstance(m, CNNSpec):
        c, h, w = m.input_shape
        shape = (f"convolutional network, {c}x{h}x{w} inputs, conv channels {', '.join(map(str, m.conv_channels))}"
                 + (f", dense layers {', '.join(map(str, m.hidden))}" if m.hidden else ""))
    else:  # pragma: no cover - the plan validator admits no other kind
        shape = m.kind
    return f"{shape}, {m.n_classes} classes"


def _privacy_words(plan: TrainingPlan, auditors: str, dp_words: str) -> str:
    if plan.mode == "secagg":
        n = len(plan.datasets)
        how = (f"secure aggregation: each update is masked so the coordinator learns only the sum; the round "
               f"survives up to {plan.secagg.max_dropouts} hospital(s) vanishing after their masked input "
               f"(Shamir threshold {n - plan.secagg.max_dropouts} of {n})")
    elif plan.mode == "he":
        how = (f"homomorphic aggregation: each update is CKKS-encrypted under the public context "
               f"{plan.he.context_sha256}; the coordinator sums ciphertexts and only {plan.he.decryptor} "
               "decrypts, and only the aggregate")
    else:
        how = f"each update is encrypted for the coordinator; {auditors}"
    return f"rows never leave the hospitals; {how}; {dp_words}"


def describe(plan: TrainingPlan) -> list[tuple[str, str]]:
    """What a member votes on, as ``(topic, plain words)`` pairs."""
    size = plan.model.size
    limit = plan.limits.max_parameters
    if limit == DEFAULT_MAX_MODEL_PARAMETERS:
        limit_words = f"within the consortium default limit of {limit:,}"
    elif limit > DEFAULT_MAX_MODEL_PARAMETERS:
        limit_words = (f"this plan RAISES the model limit to {limit:,} parameters "
                       f"(consortium default {DEFAULT_MAX_MODEL_PARAMETERS:,})")
    else:
        limit_words = f"this plan lowers the model limit to {limit:,} parameters"
    opt = plan.optimizer
    opt_words = f"{opt.name}, learning rate {opt.lr:g}"
    if isinstance(opt, SGDSpec):
        opt_words += f", momentum {opt.momentum:g}"
    opt_words += f", weight decay {opt.weight_decay:g}"
    strategy = plan.strategy
    params = strategy.params()
    strategy_words = type(strategy).model_fields["name"].description or strategy.name
    if params:
        strategy_words += " Parameters: " + ", ".join(f"{k} = {v:g}" for k, v in params.items()) + "."
    robust = plan.robust
    defences = []
    if robust.norm_bound is not None:
        defences.append(f"each update's distance to the global model is clipped to {robust.norm_bound:g}")
    if robust.foolsgold:
        defences.append("members whose updates keep pointing the same way (sybils) lose weight (FoolsGold)")
    if robust.max_weight_share is not None:
        defences.append(f"no member gets more than {robust.max_weight_share:.0%} of the aggregation weight")
    defence_words = "; ".join(defences) if defences else "none besides the strategy itself"
    c = plan.contribution
    if c.method == "similarity":
        contribution_words = ("each member's score is how closely its update points where the round's model went "
                              "(data-free)")
    else:
        how = ("leave-one-out" if c.method == "loo"
               else f"Shapley, estimated over {c.permutations} seeded orders (truncation {c.truncation:g})")
        v = c.validation
        assert v is not None  # the validator requires it for loo and shapley
        contribution_words = (f"each member's score is its {how} value by {c.metric} on the public validation set "
                              f"{v.csv_cid} ({v.size:,} bytes, sha256 {v.csv_sha256})")
    dp = plan.privacy
    if dp.mode == "none":
        privacy_words = "no differential-privacy noise is added (a dataset with a privacy budget refuses the plan)"
    else:
        amount = (f"at most epsilon {dp.epsilon:g}" if dp.epsilon is not None
                  else f"noise multiplier {dp.noise_multiplier:g}")
        privacy_words = (f"{dp.mode} differential privacy, {amount} per dataset over the run (delta {dp.delta:g}, "
                         f"clipping norm {dp.clipping_norm:g}, {dp.accountant.upper()} accountant); each round's "
                         "epsilon is charged to the dataset's budget on chain")
    pre = plan.preprocessing
    pre_words = ("features standardized with the plan's per-feature mean and std"
                 if isinstance(pre, PlanStandardization) else
                 "a statistics phase before round 1: the pooled mean/std of every hospital's sealed feature moments, "
                 "published on chain by the coordinator" if pre.standardize == "federated" else
                 "features used as they are")
    auditors = (f"{len(plan.auditors)} auditor key(s) may also open them: " + ", ".join(plan.auditors)
                if plan.auditors else "no auditor keys, so only the coordinator can open them")
    return [
        ("plan", f"{plan.name} (format version {plan.version})"),
        ("purpose", plan.purpose),
        ("model", f"{_model_words(plan)}: {size}; {limit_words}"),
        ("data", f"{len(plan.datasets)} dataset(s): {', '.join(plan.datasets)}; {pre_words}; "
                 f"{plan.validation_fraction:.0%} of each held out for validation"),
        ("rounds", f"{plan.rounds} round(s), each open {plan.round_deadline_blocks} blocks; a round closes only "
                   f"with valid updates from at least {plan.min_participants} member(s)"),
        ("training", f"each node trains {plan.local_epochs} epoch(s) per round in batches of {plan.batch_size}; "
                     f"optimizer {opt_words}"),
        ("strategy", strategy_words),
        ("defences", defence_words),
        ("contribution", contribution_words + "; a free-rider or an excluded update scores 0"),
        ("evaluation", f"each round's model is scored by {plan.metric} on the nodes' validation splits"),
        ("privacy", _privacy_words(plan, auditors, privacy_words)),
        ("seed", f"{plan.seed} (initial model, data splits, shuffling)"),
        ("sha256", f"{plan.sha256} (the hash that goes on chain)"),
    ]
