"""Identities: encrypted keystore files and the DEV ONLY anvil identities."""

from __future__ import annotations

import json
import stat

import pytest
from eth_account import Account

from fedchain.identity import (
    MAX_DEV_IDENTITIES,
    DEV_MNEMONIC,
    DEV_PRIVATE_KEYS,
    LIGHT_KDF_N,
    Identity,
    KeystoreError,
    create_identity,
    dev_identity,
    dev_x25519_from_eth_key,
    load_identity,
    save_identity,
)

PW = "correct horse battery staple"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ids") / "st-marys.json"
    ident = create_identity(path, "st-marys", PW, kdf_n=LIGHT_KDF_N)
    return path, ident


def test_create_and_load_round_trip(saved):
    path, ident = saved
    loaded = load_identity(path, PW)
    assert isinstance(loaded, Identity)
    assert loaded.name == "st-marys"
    assert loaded.address == ident.address
    assert loaded.account.key == ident.account.key
    assert loaded.x25519_public == ident.x25519_public
    assert len(loaded.x25519_public) == 32
    assert loaded.x25519_public_hex == ident.x25519_public.hex()
    assert not loaded.dev_only


def test_file_format_and_permissions(saved):
    path, ident = saved
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["fedchain_identity"] == 2
    assert doc["address"] == ident.address
    assert doc["x25519_public"] == ident.x25519_public_hex
    assert doc["x25519"]["kdf"] == "scrypt" and doc["x25519"]["kdfparams"]["n"] == LIGHT_KDF_N
    assert doc["ethereum"]["crypto"]["kdf"] == "scrypt"
    # the Ethereum half is a standard keystore any wallet can read
    assert Account.decrypt(doc["ethereum"], PW) == ident.account.key
    # no secret in clear
    raw = path.read_text()
    assert ident.account.key.hex().removeprefix("0x") not in raw
    assert ident.x25519_private.private_bytes_raw().hex() not in raw
    assert not list(path.parent.glob(".*.tmp"))  # temp file cleaned up


def test_wrong_password(saved):
    path, _ = saved
    with pytest.raises(KeystoreError, match="wrong password"):
        load_identity(path, "not the password")


def test_refuses_to_overwrite(saved):
    path, _ = saved
    before = path.read_bytes()
    with pytest.raises(KeystoreError, match="overwrite"):
        create_identity(path, "other", PW, kdf_n=LIGHT_KDF_N)
    with pytest.raises(KeystoreError, match="overwrite"):
        save_identity(dev_identity(0), path, PW, kdf_n=LIGHT_KDF_N)
    assert path.read_bytes() == before


def test_tampered_files_are_rejected(saved, tmp_path):
    path, _ = saved
    doc = json.loads(path.read_text())
    other_path = tmp_path / "other.json"
    other = create_identity(other_path, "other", PW, kdf_n=LIGHT_KDF_N)
    other_doc = json.loads(other_path.read_text())

    def check(mutated: dict, match: str | None = None):
        p = tmp_path / f"t{len(list(tmp_path.iterdir()))}.json"
        p.write_text(json.dumps(mutated))
        with pytest.raises(KeystoreError, match=match):
            load_identity(p, PW)

    # X25519 key transplanted from another identity file
    check(dict(doc, x25519=other_doc["x25519"]))
    check(dict(doc, x25519_public=other.x25519_public_hex))
    # Ethereum key transplanted
    check(dict(doc, ethereum=other_doc["ethereum"]))
    # structural damage
    check(dict(doc, fedchain_identity=99), "version")
    check({k: v for k, v in doc.items() if k != "x25519"}, "malformed")
    check(dict(doc, x25519=dict(doc["x25519"], kdfparams=dict(doc["x25519"]["kdfparams"], n=1000))))
    check(dict(doc, x25519=dict(doc["x25519"], kdfparams=dict(doc["x25519"]["kdfparams"], n=1 << 22, r=32))))
    check({"hello": "world"}, "not a fedchain identity")


def test_load_errors_are_readable(tmp_path):
    with pytest.raises(KeystoreError, match="does not exist"):
        load_identity(tmp_path / "missing.json", PW)
    p = tmp_path / "garbage.json"
    p.write_bytes(b"\x00\x01 not json")
    with pytest.raises(KeystoreError, match="not a fedchain identity"):
        load_identity(p, PW)


def test_create_validates_inputs(tmp_path):
    with pytest.raises(KeystoreError):
        create_identity(tmp_path / "a.json", "a", "", kdf_n=LIGHT_KDF_N)
    with pytest.raises(KeystoreError):
        create_identity(tmp_path / "b.json", "", PW, kdf_n=LIGHT_KDF_N)
    with pytest.raises(KeystoreError):
        create_identity(tmp_path / "c.json", "c", PW, kdf_n=1000)
    with pytest.raises(KeystoreError):
        create_identity(tmp_path / "d.json", "d", PW, kdf_n=LIGHT_KDF_N, private_key=b"\x00" * 32)
    assert not list(tmp_path.iterdir())


def test_import_existing_key(tmp_path):
    ident = create_identity(tmp_path / "imp.json", "imp", PW, kdf_n=LIGHT_KDF_N, private_key=DEV_PRIVATE_KEYS[3])
    assert ident.address == "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
    assert load_identity(tmp_path / "imp.json", PW).address == ident.address


def test_fresh_identities_differ(tmp_path):
    a = create_identity(tmp_path / "a.json", "a", PW, kdf_n=LIGHT_KDF_N)
    b = create_identity(tmp_path / "b.json", "b", PW, kdf_n=LIGHT_KDF_N)
    assert a.address != b.address and a.x25519_public != b.x25519_public


# --------------------------------------------------------------------------- DEV ONLY


def test_dev_keys_match_the_public_mnemonic():
    Account.enable_unaudited_hdwallet_features()
    for i, key in enumerate(DEV_PRIVATE_KEYS):
        acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        assert acct.key.hex().removeprefix("0x") == key.removeprefix("0x")
        assert dev_identity(i).address == acct.address


def test_dev_identities():
    d0 = dev_identity(0)
    assert d0.address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert d0.dev_only and d0.name == "dev-0"
    assert dev_identity(1, name="hospital-1").name == "hospital-1"
    assert "DEV ONLY" in repr(d0)
    # deterministic X25519, derived from the Ethereum key, distinct per index
    assert dev_identity(0).x25519_public == d0.x25519_public
    assert d0.x25519_public == dev_x25519_from_eth_key(bytes(d0.account.key)).public_key().public_bytes_raw()
    assert len({dev_identity(i).x25519_public for i in range(10)}) == 10
    for bad in (-1, MAX_DEV_IDENTITIES, "0", True):
        with pytest.raises(KeystoreError):
            dev_identity(bad)


def test_dev_identities_beyond_anvils_ten_follow_the_mnemonic():
    # anvil --accounts N derives account i at m/44'/60'/0'/0/i; a simulated consortium needs more than ten
    Account.enable_unaudited_hdwallet_features()
    for i in (10, 11, 57, MAX_DEV_IDENTITIES - 1):
        acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        assert dev_identity(i).address == acct.address and dev_identity(i).dev_only
    assert dev_identity(10).address == "0xBcd4042DE499D14e55001CcbB24a551F3b954096"  # anvil's 11th account
    assert len({dev_identity(i).address for i in range(30)}) == 30


def test_dev_identity_can_be_saved_and_keeps_its_flag(tmp_path):
    p = save_identity(dev_identity(2), tmp_path / "dev2.json", PW, kdf_n=LIGHT_KDF_N)
    loaded = load_identity(p, PW)
    assert loaded.dev_only and loaded.address == dev_identity(2).address
    assert loaded.x25519_public == dev_identity(2).x25519_public


def test_repr_hides_secrets(saved):
    _, ident = saved
    r = repr(ident)
    assert ident.address in r
    assert ident.account.key.hex().removeprefix("0x") not in r
    assert ident.x25519_private.private_bytes_raw().hex() not in r


def test_read_public_needs_no_password(saved, tmp_path):
    from fedchain.identity import read_public

    path, ident = saved
    pub = read_public(path)
    assert pub == {"name": "st-marys", "address": ident.address, "x25519": "0x" + ident.x25519_public_hex}
    assert bytes.fromhex(pub["x25519"].removeprefix("0x")) == ident.x25519_public
    bad = tmp_path / "bad.json"
    bad.write_text('{"fedchain_identity": 2, "name": "x", "address": "0x12", "x25519_public": "00"}')
    with pytest.raises(KeystoreError):
        read_public(bad)
    with pytest.raises(KeystoreError):
        read_public(tmp_path / "nope.json")


# --------------------------------------------------------------------------- keystore hygiene


def test_every_header_field_is_authenticated(tmp_path):
    """Who: anyone who can write the keystore file (a shared home, a backup, a careless copy).
    What: turn `dev_only` off so a dev identity passes for a real one (or on, to get a real one
    refused), rename the identity, or edit any other header field. All fail to load."""
    dev = save_identity(dev_identity(2), tmp_path / "dev.json", PW, kdf_n=LIGHT_KDF_N)
    real = create_identity(tmp_path / "real.json", "st-marys", PW, kdf_n=LIGHT_KDF_N)
    for path, edits in (
        (dev, [("dev_only", False)]),
        (tmp_path / "real.json", [("dev_only", True), ("name", "st-elsewhere")]),
    ):
        doc = json.loads(path.read_text())
        for key, value in edits:
            p = tmp_path / f"edited-{key}-{path.name}"
            p.write_text(json.dumps(dict(doc, **{key: value})))
            with pytest.raises(KeystoreError, match="wrong password|modified"):
                load_identity(p, PW)
        nonce = dict(doc["x25519"], nonce="00" * 12)
        p = tmp_path / f"edited-nonce-{path.name}"
        p.write_text(json.dumps(dict(doc, x25519=nonce)))
        with pytest.raises(KeystoreError):
            load_identity(p, PW)
    doc = json.loads((tmp_path / "real.json").read_text())
    for extra in ({"note": "x"}, {"dev_only": "false"}):
        p = tmp_path / "extra.json"
        p.write_text(json.dumps(dict(doc, **extra)))
        with pytest.raises(KeystoreError, match="malformed"):
            load_identity(p, PW)
        p.unlink()
    assert load_identity(tmp_path / "real.json", PW).name == real.name


def test_version_1_files_are_refused_with_a_way_forward(saved, tmp_path):
    path, _ = saved
    doc = json.loads(path.read_text())
    p = tmp_path / "v1.json"
    p.write_text(json.dumps(dict(doc, fedchain_identity=1)))
    with pytest.raises(KeystoreError, match="version 1 is no longer read.*identity create"):
        load_identity(p, PW)


def test_dev_chain_ids_are_the_backends_own():
    """The dev chain ids are read from the backends fedchain runs: anvil's default and eth-tester's."""
    import eth_tester
    from web3 import EthereumTesterProvider, Web3

    from fedchain.contracts.anvil import DEFAULT_CHAIN_ID
    from fedchain.identity import DEV_CHAIN_IDS

    assert DEV_CHAIN_IDS[DEFAULT_CHAIN_ID] == "anvil"
    tester_id = Web3(EthereumTesterProvider(eth_tester.EthereumTester())).eth.chain_id
    assert DEV_CHAIN_IDS[tester_id] == "eth-tester"
    assert set(DEV_CHAIN_IDS) == {DEFAULT_CHAIN_ID, tester_id}


def test_dev_identities_are_refused_on_real_chains(chain_backend, tmp_path):
    """On the real backends (eth-tester and anvil) dev identities are allowed; on any other chain id
    -- mainnet, Sepolia, a consortium's own chain -- they are refused, flagged or not."""
    from fedchain.identity import DevKeyOnRealChain, dev_addresses, is_dev_identity, require_chain_allows

    dev = dev_identity(1)
    require_chain_allows(dev, chain_backend.chain.chain_id)  # the live dev chain (eth-tester, anvil): allowed
    real = create_identity(tmp_path / "real.json", "real", PW, kdf_n=LIGHT_KDF_N)
    for chain_id in (1, 11155111, 424242):
        with pytest.raises(DevKeyOnRealChain, match=f"DEV ONLY.*not on chain {chain_id}"):
            require_chain_allows(dev, chain_id)
        require_chain_allows(real, chain_id)
    # a dev key imported as an ordinary identity (dev_only False) is still a dev key
    imported = create_identity(tmp_path / "imp.json", "imp", PW, kdf_n=LIGHT_KDF_N, private_key=DEV_PRIVATE_KEYS[4])
    assert not imported.dev_only and is_dev_identity(imported) and imported.address in dev_addresses()
    with pytest.raises(DevKeyOnRealChain):
        require_chain_allows(imported, 1)
    assert issubclass(DevKeyOnRealChain, KeystoreError)
    with pytest.raises(TypeError):
        require_chain_allows(dev, "1")
