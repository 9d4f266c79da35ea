"""The ``mode = "he"`` decryptor as its own long-running process, and how a coordinator reaches it.

:class:`fedchain.he_round.Decryptor` holds the CKKS secret key and decrypts only a verified
aggregate. This module gives it what a separate process needs:

* **Key file** (:func:`save_key_file`, :func:`load_key_file`): the secret context
  (:meth:`fedchain.he.DecryptorKey.to_bytes`, never pickled) encrypted exactly like the X25519
  half of an identity keystore (:mod:`fedchain.identity`): AES-256-GCM under
  ``scrypt(password, salt)`` (the ``cryptography`` library), mode 0600, never overwritten. The
  associated data binds the header (format, the decryptor's address, the sha256 of its public
  context, cipher, KDF parameters, nonce), so the file cannot be moved to another identity or
  edited unnoticed.
* **Answers file** (:class:`Answers`): what the decryptor answered, per (chain, Rounds contract,
  proposal, round): the sha256 of the request, written *before* decrypting (a write-ahead
  record), and the answer once made. So "one aggregate per round" survives a restart: the same
  request gets the same answer again (a coordinator that crashed before closing), any other
  request for that round is refused.
* **Service** (:class:`DecryptorService`, :func:`create_app`): ``POST /decrypt`` with a JSON
  body of public data only (the plan's canonical bytes, CIDs, hashes, sample counts); bounded
  size, parsed as JSON and checked field by field (nothing else is deserialized). Before the
  key is used: the request names this chain and Rounds contract, the plan is the proposal's
  plan on chain (its sha256), the round is Open on chain, every listed input is that member's
  commitment on chain, and no valid, admitted commitment on chain is left out (no subset).
  ``GET /health`` gives the decryptor's address and the sha256 of its public context.
* **Client** (:class:`HttpDecryptor`): what ``coordinator run`` calls with
  ``[coordinator] decryptor_url``; unreachable-decryptor errors are retried with the role's
  :class:`~fedchain.retry.RetryPolicy`, a refusal is an answer (:class:`HERoundError`).

Who could abuse the endpoint and what stops it:

* *anyone who can reach it* learns nothing it could not read from the chain and the store: the
  only answer is the aggregate model the coordinator publishes anyway (pinned in the store,
  hash closed on chain), and only for an Open round whose committed inputs are all included.
  It listens on loopback by default; a non-loopback address should be behind TLS / a firewall.
  Anyone could trigger the round's single decryption early (while the round is still open and
  before all targets committed): the inputs are then the ones on chain at that moment, the
  published aggregate is the same weighted FedAvg of valid commitments; it costs liveness at
  worst (a late committer's ciphertext is refused by the decryptor until the next round);
* *a dishonest coordinator asking for one ciphertext or a subset*: fewer than
  ``max(2, min_participants)`` inputs are refused (:meth:`DecryptorKey.decrypt_aggregate`);
  an input left out that is a valid ciphertext of an admitted dataset on chain is refused here
  (so the coordinator cannot choose whose update is averaged with whose); an input that is not
  the commitment on chain, or an "encrypted sum" that is not the weighted sum of the listed
  inputs, is refused by :class:`Decryptor`;
* *a second decryption in a round* (a different subset, a replay after a restart): refused by
  the answers file, which outlives the process; the same request replayed gets the same
  answer (nothing new is decrypted), and a round that is closed or not open on chain is refused;
* *a forged plan* (lower ``min_participants``, another decryptor or context): the plan bytes
  must hash to the proposal's plan hash on chain;
* *oversized or malformed bodies*: refused before parsing (``MAX_REQUEST_BYTES``), then by type.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fedchain import identity as ident
from fedchain import logs
from fedchain.config import DEFAULT_PASSWORD_ENV, load_role_config, read_password
from fedchain.content import pin_document
from fedchain.contracts.bindings import Chain, Deployment
from fedchain.errors import ConfigError, ContentUnavailable, FedchainError
from fedchain.ipfs import open_store
from fedchain.ipfs.store import StoreError, StoreUnavailable
from fedchain.he import DecryptorKey, HEError
from fedchain.he_round import Decryption, DecryptRequest, Decryptor, HEInput, HERoundError, check_input, hex_sha256
from fedchain.plan import MAX_PLAN_BYTES, canonical_json, sha256_hex, verify_plan_bytes
from fedchain.retry import RetryPolicy
from fedchain.validation import Rejection

__all__ = [
    "KEY_FILE_FORMAT", "MAX_REQUEST_BYTES", "save_key_file", "load_key_file", "Answers", "DecryptorService",
    "create_app", "HttpDecryptor", "DecryptorUnavailable", "chain_commitments", "request_json",
]

log = logging.getLogger("fedchain.decryptor")

KEY_FILE_FORMAT = "fedchain-he-key/1"
ANSWERS_FORMAT = "fedchain-he-answers/1"
#: A request is the plan (bounded) plus a few hundred bytes per input.
MAX_INPUTS = 1000
MAX_REQUEST_BYTES = MAX_PLAN_BYTES + 64 * 1024 + MAX_INPUTS * 512
_KEY_FIELDS = {"format", "address", "context_sha256", "cipher", "kdf", "kdfparams", "nonce", "ciphertext"}


# --------------------------------------------------------------------------- key file


def _key_ad(doc: dict) -> bytes:
    header = {k: v for k, v in doc.items() if k != "ciphertext"}
    return KEY_FILE_FORMAT.encode() + hashlib.sha256(canonical_json(header)).digest()


def save_key_file(path: Path, key: DecryptorKey, address: str, password: str, *,
                  kdf_n: int = ident.DEFAULT_KDF_N) -> Path:
    """Encrypt ``key`` (the decryptor ``address``'s) with ``password`` into a new file (0600; never overwrites)."""
    if not isinstance(password, str) or not password:
        raise ident.KeystoreError("the key file password must be a non-empty string")
    kdf_n = ident._check_kdf_n(kdf_n)
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    doc = {
        "format": KEY_FILE_FORMAT,
        "address": address.lower(),
        "context_sha256": sha256_hex(key.public_context().encode()),
        "cipher": "aes-256-gcm",
        "kdf": "scrypt",
        "kdfparams": {"n": kdf_n, "r": ident._SCRYPT_R, "p": ident._SCRYPT_P, "dklen": 32, "salt": salt.hex()},
        "nonce": nonce.hex(),
    }
    aes = ident._scrypt(password, salt, kdf_n, ident._SCRYPT_R, ident._SCRYPT_P)
    doc["ciphertext"] = AESGCM(aes).encrypt(nonce, key.to_bytes(), _key_ad(doc)).hex()
    ident._write_new_file(Path(path), (json.dumps(doc, indent=1) + "\n").encode())
    return Path(path)


def load_key_file(path: Path, password: str, *, address: str) -> DecryptorKey:
    """The key in ``path``; refused unless it is ``address``'s and decrypts (wrong password, edited file)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ident.KeystoreError(f"decryptor key file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ident.KeystoreError(f"{path} is not a decryptor key file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT or set(doc) != _KEY_FIELDS:
        raise ident.KeystoreError(f"{path} is not a {KEY_FILE_FORMAT} file")
    if str(doc["address"]).lower() != address.lower():
        raise ident.KeystoreError(f"{path} is the key of {doc['address']}, not of this identity ({address})")
    try:
        params = doc["kdfparams"]
        if doc["cipher"] != "aes-256-gcm" or doc["kdf"] != "scrypt" or params.get("dklen") != 32:
            raise ValueError("unsupported cipher or kdf")
        n, r, p = params["n"], params["r"], params["p"]
        if (r, p) != (ident._SCRYPT_R, ident._SCRYPT_P):
            raise ValueError("unexpected scrypt r/p")
        salt, nonce, ct = (bytes.fromhex(params["salt"]), bytes.fromhex(doc["nonce"]),
                           bytes.fromhex(doc["ciphertext"]))
        if len(salt) < 16 or len(nonce) != 12:
            raise ValueError("bad sizes")
        ad = _key_ad(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ident.KeystoreError(f"{path}: malformed decryptor key file ({exc})") from None
    aes = ident._scrypt(password, salt, ident._check_kdf_n(n), r, p)
    try:
        raw = AESGCM(aes).decrypt(nonce, ct, ad)
    except InvalidTag:
        raise ident.KeystoreError(f"wrong password for decryptor key file {path} (or the file was modified)") from None
    try:
        key = DecryptorKey.from_bytes(raw)
    except HEError as exc:
        raise ident.KeystoreError(f"{path}: not a CKKS secret context ({exc})") from None
    if sha256_hex(key.public_context().encode()) != doc["context_sha256"]:
        raise ident.KeystoreError(f"{path}: the key does not match its recorded public context")
    return key


# --------------------------------------------------------------------------- answers (survive a restart)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class Answers:
    """Per round: the sha256 of the one request the decryptor accepted, and its answer once made (a JSON file)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._rounds: dict[str, dict] = {}
        if self.path.exists():
            try:
                doc = json.loads(self.path.read_bytes())
                if doc.get("format") != ANSWERS_FORMAT or not isinstance(doc.get("rounds"), dict):
                    raise ValueError("not an answers file")
            except (ValueError, AttributeError) as exc:
                raise ConfigError(f"{self.path}: cannot read the decryptor's answers ({exc}); refusing to start "
                                  "without knowing which rounds it decrypted") from None
            self._rounds = doc["rounds"]

    @staticmethod
    def key(chain_id: int, rounds: str, proposal: int, round_: int) -> str:
        return f"{chain_id}:{rounds.lower()}:{proposal}:{round_}"

    def get(self, key: str) -> dict | None:
        return self._rounds.get(key)

    def put(self, key: str, request_sha256: str, answer: dict | None) -> None:
        self._rounds[key] = {"request": request_sha256, "answer": answer}
        self._save()

    def drop(self, key: str) -> None:
        self._rounds.pop(key, None)
        self._save()

    def _save(self) -> None:
        _write_atomic(self.path, canonical_json({"format": ANSWERS_FORMAT, "rounds": self._rounds}))


# --------------------------------------------------------------------------- the request


def request_json(req: DecryptRequest) -> dict:
    """The JSON body a coordinator sends (public data only)."""
    return {"chain_id": req.chain_id, "rounds": req.rounds, "proposal": req.proposal, "round": req.round,
            "plan": req.plan.to_canonical_bytes().decode(),
            "inputs": [[i.participant, i.dataset, i.cid, hex_sha256(i.sha256), i.n_samples] for i in req.inputs],
            "aggregate_cid": req.aggregate_cid, "aggregate_sha256": req.aggregate_sha256}


class BadRequest(FedchainError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _text(doc: dict, key: str, limit: int = 200) -> str:
    v = doc.get(key)
    if not isinstance(v, str) or not v or len(v) > limit:
        raise BadRequest(400, f"{key} must be a non-empty string of at most {limit} characters")
    return v


def _int(v: Any, what: str, low: int = 0, high: int = 2**256 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise BadRequest(400, f"{what} must be an integer from {low} to {high}")
    return v


def parse_request(body: bytes) -> dict:
    """The request's fields, checked by type and size (nothing is looked up yet)."""
    if len(body) > MAX_REQUEST_BYTES:
        raise BadRequest(413, f"the request exceeds {MAX_REQUEST_BYTES} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "the body is not JSON") from None
    fields = {"chain_id", "rounds", "proposal", "round", "plan", "inputs", "aggregate_cid", "aggregate_sha256"}
    if not isinstance(doc, dict) or set(doc) != fields:
        raise BadRequest(400, f"the body must be a JSON object with exactly {', '.join(sorted(fields))}")
    inputs = doc["inputs"]
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        raise BadRequest(400, f"inputs must be a list of 1 to {MAX_INPUTS} inputs")
    parsed = []
    for i in inputs:
        if not (isinstance(i, list) and len(i) == 5 and all(isinstance(x, str) and 0 < len(x) <= 200 for x in i[:4])):
            raise BadRequest(400, "each input is [participant, dataset, cid, sha256, n_samples]")
        parsed.append(HEInput(i[0], i[1], i[2], i[3], _int(i[4], "n_samples", 1, 2**64 - 1)))
    return {"chain_id": _int(doc["chain_id"], "chain_id"), "rounds": _text(doc, "rounds"),
            "proposal": _int(doc["proposal"], "proposal", 1), "round": _int(doc["round"], "round", 1),
            "plan": _text(doc, "plan", MAX_PLAN_BYTES), "inputs": tuple(parsed),
            "aggregate_cid": _text(doc, "aggregate_cid"), "aggregate_sha256": _text(doc, "aggregate_sha256")}


def chain_commitments(fed, proposal: int, round_: int) -> list[tuple[HEInput, bytes]]:
    """The round's commitments as the chain recorded them, with each one's dataset id."""
    names: dict[bytes, str] = {}
    out = []
    for c in fed.rounds.commitments(proposal, round_):
        if c.dataset not in names:
            info = fed.registry.dataset(c.dataset)
            names[c.dataset] = info.name if info is not None else "0x" + c.dataset.hex()
        out.append((HEInput(c.member, names[c.dataset], c.cid, "0x" + bytes(c.sha256).hex(), c.sample_count),
                    c.dataset))
    return out


# --------------------------------------------------------------------------- the service


class DecryptorService:
    """Checks a request against the chain and the answers file, then lets the :class:`Decryptor` decide."""

    def __init__(self, key: DecryptorKey, account, fed, store, answers: Answers) -> None:
        self.fed, self.store, self.answers = fed, store, answers
        self.decryptor = Decryptor(key, account, store, lambda pid, r: [i for i, _ in chain_commitments(fed, pid, r)])
        self.context_sha256 = sha256_hex(key.public_context().encode())
        self._public = key.public_context()
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return self.decryptor.address

    def health(self) -> dict:
        return {"address": self.address, "context_sha256": self.context_sha256}

    def handle(self, body: bytes) -> tuple[int, dict]:
        """(HTTP status, JSON answer) for one request body."""
        try:
            with self._lock:
                return 200, self._handle(body)
        except BadRequest as exc:
            return exc.status, {"error": str(exc)}
        except HERoundError as exc:
            return 422, {"error": str(exc)}

    def _handle(self, body: bytes) -> dict:
        q = parse_request(body)
        fed = self.fed
        if q["chain_id"] != fed.deployment.chain_id or q["rounds"].lower() != fed.addresses["Rounds"].lower():
            raise BadRequest(409, "the request is for another chain or Rounds contract than this decryptor's")
        pid, r = q["proposal"], q["round"]
        p = fed.proposals.proposal(pid)
        if p is None:
            raise BadRequest(409, f"proposal {pid} is not on chain")
        try:
            plan = verify_plan_bytes(q["plan"].encode(), p.plan_sha256)
        except FedchainError as exc:
            raise BadRequest(409, f"the plan is not proposal {pid}'s plan on chain ({exc})") from None
        if plan.mode != "he" or (plan.he.decryptor or "").lower() != self.address.lower():
            raise BadRequest(403, f"proposal {pid}'s plan does not name this decryptor")
        key = Answers.key(q["chain_id"], q["rounds"], pid, r)
        digest = sha256_hex(body_digest(q))
        done = self.answers.get(key)
        if done is not None:
            if done["request"] != digest:
                raise BadRequest(409, f"round {r} of proposal {pid} was decrypted already for another request: "
                                 "one aggregate per round")
            if done["answer"] is not None:
                log.info("round %d of proposal %d: the same request again; the same answer", r, pid)
                return done["answer"]
        phase = fed.rounds.round_info(pid, r).phase.name
        if phase != "OPEN":
            raise BadRequest(409, f"round {r} of proposal {pid} is not open on chain ({phase})")
        self._no_subset(pid, r, q["inputs"], plan)
        # Write-ahead: from here on this round's one decryption is this request's.
        self.answers.put(key, digest, None)
        try:
            got = self.decryptor.decrypt_round(DecryptRequest(
                q["chain_id"], q["rounds"], pid, r, plan, q["inputs"], q["aggregate_cid"], q["aggregate_sha256"]))
        except (HERoundError, FedchainError):
            if (pid, r) not in self.decryptor._done:  # nothing was decrypted or released: the round is still free
                self.answers.drop(key)
            raise
        answer = {"model_cid": got.model_cid, "model_sha256": got.model_sha256, "statement": got.statement,
                  "signature": got.signature}
        self.answers.put(key, digest, answer)
        log.info("decrypted the aggregate of round %d of proposal %d (%d inputs): %s", r, pid, len(q["inputs"]),
                 got.model_cid)
        return answer

    def _no_subset(self, pid: int, r: int, inputs, plan) -> None:
        """Refuse a request that leaves out a valid ciphertext of an admitted dataset committed on chain."""
        listed = {(i.participant.lower(), i.dataset) for i in inputs}
        missing = [(c, did) for c, did in chain_commitments(self.fed, pid, r)
                   if (c.participant.lower(), c.dataset) not in listed]
        if not missing:
            return
        from fedchain.validation import model_layout  # builds the model on the meta device: only here
        layout = model_layout(plan.model)
        for c, did in missing:
            verdict = self.fed.registry.admits(did, pid)
            if not verdict.ok:
                continue
            try:
                got = check_input(self.store, c.cid, c.sha256, self._public, layout)
            except StoreUnavailable:
                raise
            except (StoreError, ContentUnavailable):
                continue
            if not isinstance(got, Rejection):
                raise HERoundError(f"the request leaves out {c.participant}'s valid commitment on chain: the "
                                   "decryptor decrypts the sum of every valid committed input, not a subset")


def body_digest(q: dict) -> bytes:
    """Canonical bytes of a parsed request (inputs in (participant, dataset) order)."""
    order = sorted(q["inputs"], key=lambda i: (i.participant.lower(), i.dataset))
    return canonical_json({**{k: q[k] for k in ("chain_id", "proposal", "round", "plan", "aggregate_cid")},
                           "rounds": q["rounds"].lower(), "aggregate_sha256": hex_sha256(q["aggregate_sha256"]),
                           "inputs": [[i.participant.lower(), i.dataset, i.cid, hex_sha256(i.sha256), i.n_samples]
                                      for i in order]})


def create_app(service: DecryptorService):
    """The Starlette app: ``POST /decrypt``, ``GET /health``."""
    async def decrypt(request: Request) -> JSONResponse:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_REQUEST_BYTES):
            return JSONResponse({"error": f"the request exceeds {MAX_REQUEST_BYTES} bytes"}, status_code=413)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "the body must be application/json"}, status_code=415)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REQUEST_BYTES:
                return JSONResponse({"error": f"the request exceeds {MAX_REQUEST_BYTES} bytes"}, status_code=413)
        status, doc = await run_in_threadpool(service.handle, bytes(body))
        return JSONResponse(doc, status_code=status)

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse(service.health())

    return Starlette(routes=[Route("/decrypt", decrypt, methods=["POST"]), Route("/health", health, methods=["GET"])])


# --------------------------------------------------------------------------- the client


class DecryptorUnavailable(FedchainError):
    """The decryptor stayed unreachable for the whole retry horizon."""


class HttpDecryptor:
    """``decryptor=`` for :class:`~fedchain.coordinator.runner.Coordinator`: POST the request to ``url``."""

    def __init__(self, url: str, retry: RetryPolicy | None = None, *, timeout: float = 300.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"decryptor_url must be an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy.brief()
        self.timeout = timeout

    def __call__(self, req: DecryptRequest) -> Decryption:
        body = json.dumps(request_json(req)).encode()

        def post() -> tuple[int, bytes]:
            r = urllib.request.Request(self.url + "/decrypt", data=body, method="POST",
                                       headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(r, timeout=self.timeout) as resp:  # noqa: S310 - configured URL
                    return resp.status, resp.read(1 << 20)
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read(1 << 16)

        try:
            status, raw = self.retry.call(post, transient=(urllib.error.URLError, ConnectionError, TimeoutError),
                                          what=f"decryptor at {self.url}")
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise DecryptorUnavailable(f"the decryptor at {self.url} is unreachable ({exc})") from None
        try:
            doc = json.loads(raw)
        except ValueError:
            raise HERoundError(f"the decryptor at {self.url} answered {status} with no JSON") from None
        if status != 200 or not isinstance(doc, dict):
            raise HERoundError(f"the decryptor refused (HTTP {status}): {doc.get('error') if isinstance(doc, dict) else doc}")
        try:
            return Decryption(str(doc["model_cid"]), str(doc["model_sha256"]), str(doc["statement"]),
                              str(doc["signature"]))
        except KeyError as exc:
            raise HERoundError(f"the decryptor's answer lacks {exc}") from None


# --------------------------------------------------------------------------- the role config and process

DEFAULT_LISTEN = "127.0.0.1:8610"


class DecryptorConfig:
    """A role config (:mod:`fedchain.config`) with a ``[decryptor]`` table::

        [decryptor]
        key_file = "keys/auditor-he.json"     # written by 'fedchain decryptor keygen'
        password_file = "keys/auditor-he.pass" # its password (0600) ... or password_env = "NAME"
        listen = "127.0.0.1:8610"              # host:port of the HTTP endpoint
        answers_file = "decryptor-answers.json" # what it answered, per round (survives a restart)
    """

    def __init__(self, path: Path) -> None:
        self.role = cfg = load_role_config(path, extra_sections={"decryptor"})
        sec = cfg.raw.get("decryptor")
        allowed = {"key_file", "password_file", "password_env", "listen", "answers_file"}
        if not isinstance(sec, dict) or "key_file" not in sec or set(sec) - allowed:
            raise ConfigError(f"{cfg.source}: [decryptor] needs key_file = \"...\" and takes only "
                              f"{', '.join(sorted(allowed))}")
        if "password_file" in sec and "password_env" in sec:
            raise ConfigError(f"{cfg.source}: [decryptor] give password_file or password_env, not both")
        for k, v in sec.items():
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(f"{cfg.source}: [decryptor] {k} must be a non-empty string")
        self.key_file = cfg.path(sec["key_file"])
        self.password_file = cfg.path(sec["password_file"]) if "password_file" in sec else None
        self.password_env = sec.get("password_env", DEFAULT_PASSWORD_ENV)
        host, _, port = sec.get("listen", DEFAULT_LISTEN).rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{cfg.source}: [decryptor] listen must be host:port")
        self.host, self.port = host.strip("[]"), int(port)
        self.answers_file = cfg.path(sec.get("answers_file", "decryptor-answers.json"))

    def password(self) -> str:
        return read_password(f"decryptor key file {self.key_file}", env=self.password_env, file=self.password_file)

    def address(self) -> str:
        """The identity's address without decrypting its keystore."""
        ids = self.role.identity
        if ids.dev is not None:
            return ident.dev_identity(ids.dev).address
        return ident.read_public(ids.keystore)["address"]


def keygen(config_path: Path, *, kdf_n: int = ident.DEFAULT_KDF_N) -> dict[str, str]:
    """Generate the CKKS key pair of the config's identity, write the encrypted key file, pin the
    public context; the plan's ``[he]`` values."""
    cfg = DecryptorConfig(config_path)
    if cfg.key_file.exists():
        raise ConfigError(f"{cfg.key_file} exists; a decryptor key file is never overwritten")
    address = cfg.address()
    key = DecryptorKey.generate()
    with open_store(cfg.role.store, retry=cfg.role.retry) as store:
        pinned = pin_document(store, key.public_context().encode())
    save_key_file(cfg.key_file, key, address, cfg.password(), kdf_n=kdf_n)
    return {"decryptor": address, "context_cid": pinned.cid, "context_sha256": "0x" + pinned.sha256}


def serve(config_path: Path, *, log_json: bool | None = None, ready=None) -> None:
    """``fedchain decryptor serve``: load identity and key, connect, answer on ``listen`` until stopped."""
    cfg = DecryptorConfig(config_path)
    role = cfg.role
    json_lines = role.log_json if log_json is None else log_json
    logs.setup(role="decryptor", json_lines=json_lines, level=role.log_level.upper())
    identity = role.identity.load()
    key = load_key_file(cfg.key_file, cfg.password(), address=identity.address)
    answers = Answers(cfg.answers_file)
    chain = Chain.connect(role.chain_url, retry=role.retry)
    ident.require_chain_allows(identity, chain.chain_id)
    fed = chain.attach(Deployment.load(role.deployment_file))
    with open_store(role.store, retry=role.retry) as store:
        service = DecryptorService(key, identity.account, fed, store, answers)
        del key
        config = uvicorn.Config(create_app(service), host=cfg.host, port=cfg.port, log_level="warning",
                                timeout_graceful_shutdown=1, proxy_headers=False, server_header=False,
                                date_header=False)
        logs.event(log, "%sdecryptor %s (context %s) listening on http://%s:%d",
                   "DEV ONLY identity: " if ident.is_dev_identity(identity) else "", identity.address,
                   service.context_sha256, cfg.host, cfg.port, address=identity.address)
        if cfg.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("listening on %s: reachable from other machines without TLS; put it behind a firewall or "
                        "a TLS proxy that only the coordinator can reach", cfg.host)
        uvicorn.Server(config).run()
