"""The pieces that let role processes ride out faults, one at a time (fast, in-process).

* the retry policy: transient failures are retried with logged, growing waits
  until the horizon; answers (anything else) are never retried; a stop request
  ends a wait at once;
* passwords for background services: a file only its owner can read, or a
  named environment variable; never a prompt (or Python's GetPassWarning)
  without a terminal;
* log lines: time, proposal, round, the DEV marker; JSON lines for collectors;
* the role commands' arguments: repeatable ``--proposal``, ids beyond uint256
  refused as a usage error.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings

import pytest

from fedchain import lifecycle, logs
from fedchain.cli import main
from fedchain.config import load_role_config, read_password, read_password_file
from fedchain.errors import ConfigError
from fedchain.identity import LIGHT_KDF_N, create_identity
from fedchain.retry import RetryPolicy

FAST = RetryPolicy(horizon=3.0, first_wait=0.05, max_wait=0.2, jitter=0.01)


class Flaky:
    """Fails ``n`` times with ``exc``, then answers."""

    def __init__(self, n: int, exc: BaseException) -> None:
        self.n, self.exc, self.calls = n, exc, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.n:
            raise self.exc
        return "answer"


@pytest.fixture(autouse=True)
def _no_stop_request():
    lifecycle.reset()
    yield
    lifecycle.reset()


# -- retry policy ------------------------------------------------------------------------------

def test_transient_failures_are_retried_with_a_logged_wait_each(caplog):
    caplog.set_level(logging.INFO, logger="fedchain.retry")
    fn = Flaky(3, ConnectionError("connection refused"))
    assert FAST.call(fn, transient=(ConnectionError,), what="chain node at http://x") == "answer"
    assert fn.calls == 4
    waits = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(waits) == 3
    assert [r.fields["attempt"] for r in waits] == [2, 3, 4]
    assert all("chain node at http://x unreachable (connection refused)" in r.getMessage() for r in waits)
    assert waits[0].fields["wait_s"] <= waits[-1].fields["wait_s"]  # exponential (jitter is tiny here)
    assert any("answers again after 4 attempts" in r.getMessage() for r in caplog.records)


def test_an_answer_is_never_retried():
    fn = Flaky(5, ValueError("execution reverted"))
    with pytest.raises(ValueError):
        FAST.call(fn, transient=(ConnectionError,), what="x")
    assert fn.calls == 1


def test_gives_up_after_the_horizon_with_the_last_error():
    fn = Flaky(10**6, ConnectionError("refused"))
    t0 = time.monotonic()
    with pytest.raises(ConnectionError):
        RetryPolicy(horizon=0.6, first_wait=0.05, max_wait=0.1, jitter=0).call(fn, transient=(ConnectionError,),
                                                                              what="x")
    took = time.monotonic() - t0
    assert 0.4 < took < 1.5 and fn.calls > 3


def test_a_stream_that_cannot_be_replayed_is_not_retried_and_a_replayable_one_is_rewound():
    fn = Flaky(1, ConnectionError("reset"))
    with pytest.raises(ConnectionError):
        FAST.call(fn, transient=(ConnectionError,), what="x", can_retry=lambda: False)
    assert fn.calls == 1
    rewound = []
    fn = Flaky(2, ConnectionError("reset"))
    FAST.call(fn, transient=(ConnectionError,), what="x", before_retry=lambda: rewound.append(fn.calls))
    assert rewound == [1, 2]


def test_a_stop_request_ends_a_wait_at_once():
    fn = Flaky(10**6, ConnectionError("refused"))
    patient = RetryPolicy(horizon=600, first_wait=5, max_wait=30, jitter=0)
    threading.Timer(0.3, lifecycle.request, args=(signal.SIGTERM,)).start()
    t0 = time.monotonic()
    with pytest.raises(lifecycle.StopRequested) as info:
        patient.call(fn, transient=(ConnectionError,), what="x")
    assert time.monotonic() - t0 < 2
    assert info.value.exit_code == lifecycle.ExitCode.TERMINATED == 143


def test_policy_values_are_checked():
    with pytest.raises(ConfigError):
        RetryPolicy(horizon=-1)
    with pytest.raises(ConfigError):
        RetryPolicy(first_wait=5, max_wait=1)


def test_signal_handling_finishes_the_step_then_stops(caplog):
    caplog.set_level(logging.INFO)
    logger = logging.getLogger("fedchain.test")
    finished = []
    with pytest.raises(lifecycle.StopRequested) as info:
        with lifecycle.handling(logger):
            lifecycle.set_activity("training round 2 of proposal 1")
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only records it ...
            finished.append("step")  # ... so the step under way runs to its end
            lifecycle.sleep(5)  # and the next wait gives up at once
    assert finished == ["step"] and info.value.signum == signal.SIGTERM
    text = caplog.text
    assert "received SIGTERM: finishing training round 2 of proposal 1, then stopping" in text
    assert "stopped by SIGTERM" in text and "exit code 143" in text
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back


def test_a_second_signal_abandons_the_step():
    with pytest.raises(lifecycle.StopRequested) as info:
        with lifecycle.handling(logging.getLogger("fedchain.test")):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # raises right here
            pytest.fail("the second signal did not interrupt the step")
    assert info.value.exit_code == lifecycle.ExitCode.INTERRUPTED == 130


# -- passwords -----------------------------------------------------------------------------------

def test_a_password_file_readable_by_others_is_refused(tmp_path):
    secret = tmp_path / "st-mary.pass"
    secret.write_text("correct horse\n")
    for mode in (0o644, 0o640, 0o604, 0o660):
        os.chmod(secret, mode)
        with pytest.raises(ConfigError, match="chmod 600"):
            read_password_file(secret)
    for mode in (0o600, 0o400):
        os.chmod(secret, mode)
        assert read_password_file(secret) == "correct horse"  # one trailing newline dropped


def test_password_file_edge_cases(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_password_file(tmp_path / "missing")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="regular file"):
        read_password_file(tmp_path / "dir")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    os.chmod(empty, 0o600)
    with pytest.raises(ConfigError, match="empty"):
        read_password_file(empty)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 10_000)
    os.chmod(big, 0o600)
    with pytest.raises(ConfigError, match="one line"):
        read_password_file(big)
    link = tmp_path / "link"
    link.symlink_to(empty)  # a symlink is not followed: its target's mode is not what we checked
    with pytest.raises(ConfigError, match="regular file"):
        read_password_file(link)


def test_no_password_and_no_terminal_is_a_sentence_not_a_warning(monkeypatch):
    monkeypatch.delenv("FEDCHAIN_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # GetPassWarning would fail the test
        with pytest.raises(ConfigError, match=r"set \$FEDCHAIN_PASSWORD, or give password_file"):
            read_password("keys/a.json")
    monkeypatch.setenv("HOSPITAL_A_PASSWORD", "from-env")
    assert read_password("keys/a.json", env="HOSPITAL_A_PASSWORD") == "from-env"


def test_role_config_takes_a_password_file_or_a_named_variable(tmp_path, monkeypatch):
    ident = create_identity(tmp_path / "a.json", "st-mary", "pw-1", kdf_n=LIGHT_KDF_N)
    net = '[network]\nchain = "http://127.0.0.1:1"\ndeployment = "d.json"\nstore = "local:store"\n'
    secret = tmp_path / "a.pass"
    secret.write_text("pw-1\n")
    os.chmod(secret, 0o600)
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[identity]\nkeystore = "a.json"\npassword_file = "a.pass"\n{net}'
                   "[retry]\nhorizon_seconds = 90\nmax_wait_seconds = 5\n[log]\njson = true\nlevel = \"debug\"\n")
    loaded = load_role_config(cfg)
    assert loaded.identity.load().address == ident.address
    assert (loaded.retry.horizon, loaded.retry.max_wait, loaded.log_json, loaded.log_level) == (90, 5, True, "debug")
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match="mode 0644"):
        loaded.identity.load()

    cfg.write_text(f'[identity]\nkeystore = "a.json"\npassword_env = "ST_MARY_PW"\n{net}')
    monkeypatch.setenv("ST_MARY_PW", "pw-1")
    assert load_role_config(cfg).identity.load().address == ident.address
    assert load_role_config(cfg).retry == RetryPolicy()  # default: minutes, not seconds
    assert RetryPolicy().horizon >= 300

    for bad, why in [
        ('keystore = "a.json"\npassword_env = "X"\npassword_file = "a.pass"', "not both"),
        ('dev = 1\npassword_env = "X"', "takes no password"),
    ]:
        cfg.write_text(f"[identity]\n{bad}\n{net}")
        with pytest.raises(ConfigError, match=why):
            load_role_config(cfg)
    for table, why in [("[retry]\nhorizon_seconds = -1", "horizon_seconds"),
                       ("[retry]\nfirst_wait_seconds = 10\nmax_wait_seconds = 1", "max_wait_seconds"),
                       ("[retry]\nhorizon = 5", "unknown key"),
                       ('[log]\nlevel = "loud"', "level must be")]:
        cfg.write_text(f'[identity]\ndev = 1\n{net}{table}\n')
        with pytest.raises(ConfigError, match=why):
            load_role_config(cfg)


# -- log lines -----------------------------------------------------------------------------------

def test_log_lines_carry_time_proposal_round_and_the_dev_marker():
    buf = io.StringIO()
    who = logs.identity_label("dev-1", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", True)
    assert who == "DEV dev-1 (0x7099…79C8)"
    logs.setup(role="node", who=who, dev=True, stream=buf)
    logs.event(logging.getLogger("fedchain.node"), "committed round %d", 2, proposal=1, round=2, loss=0.25,
               accuracy=0.9)
    line = buf.getvalue().strip()
    assert line.endswith("INFO  node DEV dev-1 (0x7099…79C8) p1 r2  committed round 2")
    assert line[:4].isdigit() and "T" in line[:11] and line[23] == "Z"  # 2026-01-02T03:04:05.678Z

    buf = io.StringIO()
    logs.setup(role="node", who=who, dev=True, json_lines=True, stream=buf)
    logs.event(logging.getLogger("fedchain.node"), "committed round %d", 2, proposal=1, round=2, loss=0.25,
               accuracy=0.9)
    doc = json.loads(buf.getvalue())
    assert {k: doc[k] for k in ("level", "role", "who", "dev", "proposal", "round", "msg", "loss", "accuracy")} == {
        "level": "info", "role": "node", "who": who, "dev": True, "proposal": 1, "round": 2,
        "msg": "committed round 2", "loss": 0.25, "accuracy": 0.9}
    logging.getLogger("fedchain").handlers.clear()


def test_the_log_follows_stderr_when_it_is_replaced(monkeypatch):
    """A command run inside a longer-lived process (a test runner, a notebook) set up its log on the
    stderr of that moment; once that stream is swapped and closed, records go to the new stderr
    instead of failing with 'Logging error ... I/O operation on closed file'."""
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.setup(role="node", who="dev-1")
    logging.getLogger("fedchain.node").warning("to the first")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    try:
        logging.getLogger("fedchain.node").warning("to the second")
    finally:
        logging.getLogger("fedchain").handlers.clear()
    text = second.getvalue()
    assert "to the second" in text and "Logging error" not in text and "Traceback" not in text


# -- role command arguments ------------------------------------------------------------------------

def test_a_proposal_id_beyond_uint256_is_a_usage_error(tmp_path, capsys):
    code = main(["coordinator", "run", "-c", str(tmp_path / "c.toml"), "--proposal", str(2**256)])
    assert code == 2
    assert "is not a proposal id" in capsys.readouterr().err
    assert main(["node", "run", "-c", str(tmp_path / "c.toml"), "--proposal", "0"]) == 2


def test_role_help_documents_the_exit_codes(capsys):
    for role in ("node", "coordinator"):
        assert main([role, "run", "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        for fragment in ("3 chain node unreachable", "4 content store unreachable", "143 stopped by SIGTERM",
                         "130 stopped by SIGINT"):
            assert fragment in text, (role, fragment)


def test_the_readme_role_configs_are_valid(tmp_path):
    """The README's complete node config and its coordinator config load as written."""
    from pathlib import Path

    from fedchain.network import NetworkConfig

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Running the node and the coordinator"):]
    blocks = [b.split("```", 1)[0] for b in section.split("```toml\n")[1:3]]
    assert "[dataset]" in blocks[0] and "[coordinator]" in blocks[1]
    NetworkConfig("http://127.0.0.1:8545", str(tmp_path / "d.json"), "local:store").save(tmp_path / ".fedchain")
    for name, text, extra in (("hospital.toml", blocks[0], {"dataset", "limits"}),
                              ("ops.toml", blocks[1], {"coordinator"})):
        (tmp_path / name).write_text(text)
        cfg = load_role_config(tmp_path / name, extra_sections=extra)
        assert cfg.chain_url == "http://127.0.0.1:8545"
    node = load_role_config(tmp_path / "hospital.toml", extra_sections={"dataset", "limits"})
    assert node.identity.password_file == tmp_path / "keys/st-mary.pass" and node.retry == RetryPolicy()


def test_a_name_with_a_newline_cannot_forge_a_log_line():
    """Dataset and member names, revert texts and daemon errors are chosen by others; a readable
    log line quotes them with control characters escaped, so each record stays one line."""
    buf = io.StringIO()
    logs.setup(role="coordinator", who="ops\nevil", stream=buf)
    forged = "2026-01-01T00:00:00.000Z INFO  coordinator ops (0x90F7…b906) p1 r1  recorded round 1's global accuracy 1.0"
    logging.getLogger("fedchain.coordinator").warning("rejected update of %s", f"hospital-x\n{forged}\r\u2028")
    text = buf.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "hospital-x\\n2026-01-01" in text and "ops\\nevil" in text
    logging.getLogger("fedchain").handlers.clear()
