"""A decryptor in its own process (used by tests/test_he_round.py): it generates the CKKS key pair,
prints its public context, then answers one JSON decryption request per line on stdin.

argv: chain URL, deployment file, store folder, dev account index of the decryptor (DEV ONLY keys).
Requests carry only public data (the plan's canonical bytes, CIDs, hashes); nothing is unpickled.
"""

from __future__ import annotations

import json
import sys

from fedchain.cli.simulation import he_commitments
from fedchain.contracts.bindings import Chain
from fedchain.contracts.models import Deployment
from fedchain.he import DecryptorKey
from fedchain.he_round import DecryptRequest, Decryptor, HEInput
from fedchain.identity import dev_identity
from fedchain.ipfs.local import LocalStore
from fedchain.plan import parse_plan


def main() -> None:
    url, deployment, store_dir, index = sys.argv[1:5]
    fed = Chain.connect(url).attach(Deployment.load(deployment))
    who = dev_identity(int(index))
    key = DecryptorKey.generate()
    dec = Decryptor(key, who.account, LocalStore(store_dir, fsync=False),
                    lambda pid, r: he_commitments(fed, pid, r))
    print(json.dumps({"address": who.address, "public": key.public_context().encode().hex()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            got = dec.decrypt_round(DecryptRequest(
                req["chain_id"], req["rounds"], req["proposal"], req["round"], parse_plan(req["plan"].encode()),
                tuple(HEInput(*i) for i in req["inputs"]), req["aggregate_cid"], req["aggregate_sha256"]))
            out = {"model_cid": got.model_cid, "model_sha256": got.model_sha256, "statement": got.statement,
                   "signature": got.signature}
        except Exception as exc:  # report, keep serving
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
