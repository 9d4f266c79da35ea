"""Participant identities: an Ethereum account plus an X25519 encryption key.

An :class:`Identity` signs chain transactions with its Ethereum key and opens
/ seals envelopes with its X25519 key (:mod:`fedchain.envelope`); the X25519
public key is what a member registers on chain.

Keystore file (JSON, written atomically, mode 0600, never overwritten)::

    {
      "fedchain_identity": 2,
      "name": "st-marys",
      "address": "0x...",                       # EIP-55
      "x25519_public": "<64 hex>",
      "dev_only": false,
      "ethereum": { ...standard Web3 Secret Storage v3 keystore
                    (eth_account.Account.encrypt, scrypt)... },
      "x25519": {
        "cipher": "aes-256-gcm",
        "kdf": "scrypt",
        "kdfparams": {"n": 262144, "r": 8, "p": 1, "dklen": 32, "salt": "<hex>"},
        "nonce": "<24 hex>",
        "ciphertext": "<hex: 32-byte private key + 16-byte tag>"
      }
    }

The X25519 private key is encrypted under ``scrypt(password, salt)`` with
AES-256-GCM; the associated data is ``"fedchain-identity/2" || SHA-256(header)``
where *header* is the canonical JSON (sorted keys, no spaces, ASCII) of every
field but the two ciphertexts: ``fedchain_identity``, ``name``, ``address``,
``x25519_public``, ``dev_only`` and ``x25519``'s cipher, kdf, kdfparams and
nonce. So no field can be edited -- in particular ``dev_only`` cannot be turned
off to pass a dev key for a real one -- and the key cannot be moved into another
identity's file. The Ethereum half is checked against ``address`` on loading.
Unknown fields are refused. Both halves use the same password.  ``kdf_n``
(scrypt cost, a power of two, default 2**18 as geth's "standard") can be lowered
for tests. Version 1 files (whose AEAD data did not cover ``name`` or
``dev_only``) are refused with a message saying to re-create or re-import.

Dev mode (DEV ONLY, never for real data): :func:`dev_identity` returns the
well-known anvil / hardhat accounts of the public mnemonic ``test test ... junk``
with an X25519 key derived deterministically from the Ethereum key (HKDF) --
anyone can recompute these keys. :func:`require_chain_allows` refuses them (by
the flag *and* by the well-known addresses, so a re-imported dev key is caught
too) on any chain id that is not a known dev chain (:data:`DEV_CHAIN_IDS`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from eth_account import Account
from eth_account.signers.local import LocalAccount

from fedchain.envelope import fingerprint
from fedchain.errors import FedchainError

__all__ = [
    "FILE_VERSION",
    "DEFAULT_KDF_N",
    "LIGHT_KDF_N",
    "DEV_MNEMONIC",
    "DEV_PRIVATE_KEYS",
    "DEV_CHAIN_IDS",
    "KeystoreError",
    "DevKeyOnRealChain",
    "Identity",
    "create_identity",
    "save_identity",
    "load_identity",
    "read_public",
    "dev_identity",
    "dev_x25519_from_eth_key",
    "dev_addresses",
    "is_dev_identity",
    "require_chain_allows",
]

FILE_VERSION = 2
DEFAULT_KDF_N = 1 << 18
LIGHT_KDF_N = 1 << 10  # tests only
MAX_KDF_N = 1 << 22
_SCRYPT_R = 8
_SCRYPT_P = 1
_MAX_SCRYPT_MEMORY = 1 << 30
_AD_PREFIX = b"fedchain-identity/2"
_FIELDS = {"fedchain_identity", "name", "address", "x25519_public", "dev_only", "ethereum", "x25519"}

PathLike = Union[str, os.PathLike]

#: DEV ONLY -- the public anvil / hardhat mnemonic.
DEV_MNEMONIC = "test test test test test test test test test test test junk"

#: DEV ONLY -- private keys of m/44'/60'/0'/0/i for i = 0..9 of :data:`DEV_MNEMONIC`.
#: These are published everywhere; anything they protect is public.
DEV_PRIVATE_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)

#: Chains on which DEV ONLY identities may act: anvil's default chain id
#: (``fedchain.contracts.anvil.DEFAULT_CHAIN_ID``) and eth-tester's py-evm backend's
#: (``eth_tester.backends.pyevm``, what ``eth-tester://`` runs). Both are local, throw-away chains.
DEV_CHAIN_IDS: dict[int, str] = {31337: "anvil", 131277322940537: "eth-tester"}

_DEV_X25519_SALT = b"fedchain DEV ONLY x25519"
_DEV_X25519_INFO = b"fedchain/dev-x25519/v1"


class KeystoreError(FedchainError):
    """An identity file cannot be created, read or decrypted."""


class DevKeyOnRealChain(KeystoreError):
    """A DEV ONLY identity (public keys) was about to act on a chain that is not a local dev chain."""


@dataclass(frozen=True, repr=False)
class Identity:
    """A participant: name, Ethereum account, X25519 private key."""

    name: str
    account: LocalAccount
    x25519_private: X25519PrivateKey
    dev_only: bool = field(default=False)

    @property
    def address(self) -> str:
        """EIP-55 Ethereum address."""
        return self.account.address

    @property
    def x25519_public(self) -> bytes:
        """Raw 32-byte X25519 public key (what is registered on chain)."""
        return self.x25519_private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def x25519_public_hex(self) -> str:
        return self.x25519_public.hex()

    @property
    def fingerprint(self) -> str:
        """Hex fingerprint of the X25519 public key, as envelopes list recipients."""
        return fingerprint(self.x25519_public).hex()

    def __repr__(self) -> str:  # never show key material
        dev = ", DEV ONLY" if self.dev_only else ""
        return f"Identity(name={self.name!r}, address={self.address}, x25519={self.fingerprint}{dev})"


# --------------------------------------------------------------------------- helpers


def _x25519_raw(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _check_kdf_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 2 or n & (n - 1) or n > MAX_KDF_N:
        raise KeystoreError(f"scrypt cost n must be a power of two in [2, {MAX_KDF_N}], got {n!r}")
    return n


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode("utf-8"))


def _header_ad(doc: dict) -> bytes:
    """AEAD associated data: every field of the file except the two ciphertexts."""
    x = doc["x25519"]
    header = {k: v for k, v in doc.items() if k not in ("ethereum", "x25519")}
    header["x25519"] = {k: v for k, v in x.items() if k != "ciphertext"}
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _AD_PREFIX + hashlib.sha256(text.encode("ascii")).digest()


def _write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` atomically, mode 0600; fail if it exists."""
    if path.exists():
        raise KeystoreError(f"refusing to overwrite existing identity file {path}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if path appeared meanwhile
        except FileExistsError:
            raise KeystoreError(f"refusing to overwrite existing identity file {path}") from None
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:  # pragma: no cover - directory fsync unsupported
            pass
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------- keystore


def save_identity(identity: Identity, path: PathLike, password: str, *, kdf_n: int = DEFAULT_KDF_N) -> Path:
    """Encrypt ``identity`` with ``password`` into a new keystore file at ``path``."""
    if not isinstance(password, str) or not password:
        raise KeystoreError("the keystore password must be a non-empty string")
    kdf_n = _check_kdf_n(kdf_n)
    path = Path(path)
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    key = _scrypt(password, salt, kdf_n, _SCRYPT_R, _SCRYPT_P)
    pub = identity.x25519_public
    doc = {
        "fedchain_identity": FILE_VERSION,
        "name": identity.name,
        "address": identity.address,
        "x25519_public": pub.hex(),
        "dev_only": identity.dev_only,
        "ethereum": Account.encrypt(identity.account.key, password, kdf="scrypt", iterations=kdf_n),
        "x25519": {
            "cipher": "aes-256-gcm",
            "kdf": "scrypt",
            "kdfparams": {"n": kdf_n, "r": _SCRYPT_R, "p": _SCRYPT_P, "dklen": 32, "salt": salt.hex()},
            "nonce": nonce.hex(),
        },
    }
    ct = AESGCM(key).encrypt(nonce, _x25519_raw(identity.x25519_private), _header_ad(doc))
    doc["x25519"]["ciphertext"] = ct.hex()
    _write_new_file(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    return path


def create_identity(
    path: PathLike,
    name: str,
    password: str,
    *,
    kdf_n: int = DEFAULT_KDF_N,
    private_key: bytes | str | None = None,
) -> Identity:
    """Generate a new identity (or import ``private_key``) and save it to ``path``.

    Refuses to overwrite an existing file.
    """
    if not isinstance(name, str) or not name.strip():
        raise KeystoreError("an identity needs a non-empty name")
    if Path(path).exists():
        raise KeystoreError(f"refusing to overwrite existing identity file {path}")
    try:
        account = Account.create() if private_key is None else Account.from_key(private_key)
    except (ValueError, TypeError) as exc:
        raise KeystoreError(f"invalid Ethereum private key: {exc}") from None
    ident = Identity(name=name, account=account, x25519_private=X25519PrivateKey.generate())
    save_identity(ident, path, password, kdf_n=kdf_n)
    return ident


def _field(doc: dict, key: str, kind: type, path: Path):
    v = doc.get(key)
    if not isinstance(v, kind):
        raise KeystoreError(f"{path}: malformed identity file (field {key!r})")
    return v


def load_identity(path: PathLike, password: str) -> Identity:
    """Decrypt the identity file at ``path``; wrong password -> :class:`KeystoreError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeystoreError(f"identity file {path} does not exist") from None
    except OSError as exc:
        raise KeystoreError(f"cannot read identity file {path}: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise KeystoreError(f"{path} is not a fedchain identity file (not JSON)") from None
    if not isinstance(doc, dict) or "fedchain_identity" not in doc:
        raise KeystoreError(f"{path} is not a fedchain identity file")
    if doc["fedchain_identity"] == 1:
        raise KeystoreError(
            f"{path}: identity file version 1 is no longer read (its dev_only flag and name were not "
            "authenticated); create a new one with `fedchain identity create` (an existing Ethereum key can be "
            "re-imported with fedchain.identity.create_identity(..., private_key=...); register the new X25519 key)"
        )
    if doc["fedchain_identity"] != FILE_VERSION:
        raise KeystoreError(
            f"{path}: identity file version {doc['fedchain_identity']!r} is not supported (expected {FILE_VERSION})"
        )
    if not isinstance(password, str):
        raise KeystoreError("the keystore password must be a string")
    unknown = set(doc) - _FIELDS
    if unknown:
        raise KeystoreError(f"{path}: malformed identity file (unknown field(s) {', '.join(sorted(map(repr, unknown)))})")
    name = _field(doc, "name", str, path)
    address = _field(doc, "address", str, path)
    dev_only = _field(doc, "dev_only", bool, path)
    xk = _field(doc, "x25519", dict, path)
    params = xk.get("kdfparams")
    try:
        if xk.get("cipher") != "aes-256-gcm" or xk.get("kdf") != "scrypt" or not isinstance(params, dict):
            raise ValueError("unsupported cipher or kdf")
        public = bytes.fromhex(_field(doc, "x25519_public", str, path))
        salt = bytes.fromhex(params["salt"])
        nonce = bytes.fromhex(xk["nonce"])
        ct = bytes.fromhex(xk["ciphertext"])
        n, r, p = params["n"], params["r"], params["p"]
        if params.get("dklen", 32) != 32 or len(public) != 32 or len(nonce) != 12 or len(salt) < 16:
            raise ValueError("bad sizes")
        if not (isinstance(r, int) and 1 <= r <= 32 and isinstance(p, int) and 1 <= p <= 16):
            raise ValueError("bad scrypt r/p")
        eth_params = doc.get("ethereum", {}).get("crypto", {}).get("kdfparams", {})
        for cost, rr in ((n, r), (eth_params.get("n", 1), eth_params.get("r", 1))):
            if isinstance(cost, int) and isinstance(rr, int) and 128 * cost * rr > _MAX_SCRYPT_MEMORY:
                raise ValueError("scrypt parameters need more than 1 GiB of memory")
        bytes.fromhex(address[2:])
        ad = _header_ad(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise KeystoreError(f"{path}: malformed identity file ({exc})") from None
    _check_kdf_n(n)
    key = _scrypt(password, salt, n, r, p)
    try:
        x_raw = AESGCM(key).decrypt(nonce, ct, ad)
    except InvalidTag:
        raise KeystoreError(
            f"wrong password for identity file {path} (or the file was modified)"
        ) from None
    x_priv = X25519PrivateKey.from_private_bytes(x_raw)
    ident_pub = x_priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if ident_pub != public:
        raise KeystoreError(f"{path}: the X25519 key does not match its recorded public key")
    try:
        eth_key = Account.decrypt(_field(doc, "ethereum", dict, path), password)
    except ValueError as exc:  # eth-keyfile raises ValueError subclasses ("MAC mismatch")
        raise KeystoreError(
            f"the Ethereum keystore in {path} could not be decrypted with this password ({exc}); "
            "the file was modified or its two halves use different passwords"
        ) from None
    account = Account.from_key(eth_key)
    if account.address.lower() != address.lower():
        raise KeystoreError(
            f"{path}: the Ethereum key belongs to {account.address}, but the file says {address}"
        )
    return Identity(name=name, account=account, x25519_private=x_priv, dev_only=dev_only)


def read_public(path: PathLike) -> dict[str, str]:
    """The public part of an identity file, no password needed.

    Returns ``{"name", "address", "x25519"}`` (``x25519`` as ``0x``-hex), the
    entry format of a founders file.  Nothing is decrypted, so nothing here is
    authenticated: :func:`load_identity` is what checks the file.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise KeystoreError(f"identity file {path} does not exist") from None
    except OSError as exc:
        raise KeystoreError(f"cannot read identity file {path}: {exc.strerror}") from None
    except ValueError:
        raise KeystoreError(f"{path} is not a fedchain identity file (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("fedchain_identity") != FILE_VERSION:
        raise KeystoreError(f"{path} is not a fedchain identity file (version {FILE_VERSION})")
    name = _field(doc, "name", str, path)
    address = _field(doc, "address", str, path)
    public = _field(doc, "x25519_public", str, path)
    try:
        if len(bytes.fromhex(public)) != 32 or len(bytes.fromhex(address.removeprefix("0x"))) != 20:
            raise ValueError
    except ValueError:
        raise KeystoreError(f"{path}: malformed identity file (address or x25519_public)") from None
    result = {"name": name, "address": address, "x25519": "0x" + public.lower()}
    if doc.get("dev_only"):
        result["dev_only"] = "true"
    return result


# --------------------------------------------------------------------------- DEV ONLY


def dev_x25519_from_eth_key(eth_private_key: bytes) -> X25519PrivateKey:
    """DEV ONLY: derive an X25519 key from an Ethereum private key with HKDF-SHA256.

    Deterministic, so dev networks need no key exchange; anyone who knows the
    Ethereum key (for dev keys: everyone) knows this key too.
    """
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=_DEV_X25519_SALT, info=_DEV_X25519_INFO).derive(
        bytes(eth_private_key)
    )
    return X25519PrivateKey.from_private_bytes(seed)


#: DEV ONLY -- how many dev identities :func:`dev_identity` derives (a simulated consortium of
#: 100 hospitals plus its operators fits; the bound keeps a typo from deriving keys for minutes).
MAX_DEV_IDENTITIES = 1000


@functools.lru_cache(maxsize=None)
def dev_private_key(index: int) -> str:
    """DEV ONLY: the private key of ``m/44'/60'/0'/0/index`` of :data:`DEV_MNEMONIC` (0x-hex).

    Indices 0..9 are anvil's prefunded accounts (:data:`DEV_PRIVATE_KEYS`); later ones are
    derived the same way (BIP-32/44, as anvil does with ``--accounts N``) and must be funded
    before they can send transactions.
    """
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_DEV_IDENTITIES:
        raise KeystoreError(f"dev identity index must be 0..{MAX_DEV_IDENTITIES - 1}, got {index!r}")
    if index < len(DEV_PRIVATE_KEYS):
        return DEV_PRIVATE_KEYS[index]
    Account.enable_unaudited_hdwallet_features()  # DEV ONLY: derivation from the public mnemonic
    return "0x" + bytes(Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}").key).hex()


def dev_identity(index: int, name: str | None = None) -> Identity:
    """DEV ONLY: identity ``index`` (0..MAX_DEV_IDENTITIES-1) of the public dev mnemonic.

    0..9 are the anvil / hardhat dev accounts. Never use for real data: the private
    keys are public knowledge.
    """
    account = Account.from_key(dev_private_key(index))
    return Identity(
        name=name if name is not None else f"dev-{index}",
        account=account,
        x25519_private=dev_x25519_from_eth_key(bytes(account.key)),
        dev_only=True,
    )


@functools.cache
def dev_addresses() -> frozenset[str]:
    """The (EIP-55) addresses of :data:`DEV_PRIVATE_KEYS`."""
    return frozenset(Account.from_key(k).address for k in DEV_PRIVATE_KEYS)


def is_dev_identity(identity: Identity) -> bool:
    """True for a DEV ONLY identity: flagged so, or holding one of the public dev keys anyway."""
    return identity.dev_only or identity.address in dev_addresses()


def require_chain_allows(identity: Identity, chain_id: int) -> None:
    """Refuse (:class:`DevKeyOnRealChain`) to let a DEV ONLY identity act on ``chain_id`` unless it is a dev chain.

    Call it wherever an identity meets a chain (signing transactions, sealing
    updates). Dev identities are recognised by their authenticated ``dev_only``
    flag and by their well-known addresses (a dev key imported as an ordinary
    identity is still a dev key).
    """
    if isinstance(chain_id, bool) or not isinstance(chain_id, int):
        raise TypeError(f"chain_id must be an integer, got {chain_id!r}")
    if is_dev_identity(identity) and chain_id not in DEV_CHAIN_IDS:
        known = ", ".join(f"{cid} ({name})" for cid, name in DEV_CHAIN_IDS.items())
        raise DevKeyOnRealChain(
            f"{identity.name} ({identity.address}) is a DEV ONLY identity whose private keys are public; "
            f"it may act only on a local dev chain ({known}), not on chain {chain_id}"
        )
