"""gRPC parties on 127.0.0.1 with mutual TLS: bit-identical to in-process, timeouts, refused certificates,
malformed replies; plus the client against a fake channel (no network)."""

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from trustlab.runtime import ConfigError
from trustlab.vfl.config import load_config
from trustlab.vfl.data import export_parties
from trustlab.vfl.errors import MalformedMessageError, PartyError, PartyTimeoutError, TLSRefusedError
from trustlab.vfl.local import party_servers, write_parties_yaml
from trustlab.vfl.train import train
from trustlab.vfl.transport.tls import make_test_pki

TIMEOUT = 5


def _cfg(**train_kw):
    return load_config(None, {"train": {"epochs": 1, **train_kw},
                              "transport": {"message_timeout_s": TIMEOUT, "connect_timeout_s": 20}})


def _pki_cli(*argv):
    from trustlab.cli.main import main

    try:
        main(["vfl", "pki", *map(str, argv)])
    except SystemExit as e:
        assert e.code in (0, None)


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    """The federation's certificates come from `trustlab vfl pki` (so every mTLS test here uses them); the rogue,
    self-signed client certificate from make_test_pki."""
    root = tmp_path_factory.mktemp("fed")
    files = export_parties(_cfg(), root / "data")
    pki_dir = root / "pki"
    _pki_cli("ca", "--out", pki_dir)
    for i in (0, 1):
        _pki_cli("party", "--ca-dir", pki_dir, "--id", i, "--host", "127.0.0.1", "--host", "localhost",
                 "--out", pki_dir)
    _pki_cli("label", "--ca-dir", pki_dir, "--out", pki_dir)
    rogue = make_test_pki(root / "rogue", party_ids=())
    pki = {"ca": str(pki_dir / "ca.crt"), "rogue.crt": rogue["rogue.crt"], "rogue.key": rogue["rogue.key"],
           **{f"{n}.{ext}": str(pki_dir / f"{n}.{ext}") for n in ("party0", "party1", "label") for ext in ("crt", "key")}}
    return root, files[1:], pki


def _grpc_cfg(cfg, pf, **transport):
    return replace(cfg, transport=replace(cfg.transport, kind="grpc", parties=str(pf), **transport))


@pytest.mark.net
def test_grpc_is_bit_identical_to_inproc(fed, tmp_path):
    root, files, pki = fed
    cfg = _cfg()
    ref = train(cfg, tmp_path / "inproc").results
    with party_servers(files, pki, tmp_path / "state") as servers:
        pf = write_parties_yaml(tmp_path / "parties.yaml", pki, [a for _, a, _ in servers])
        res = train(_grpc_cfg(cfg, pf), tmp_path / "grpc", parties_file=str(pf)).results
    assert res["train"]["party_sha256"] == ref["train"]["party_sha256"]
    assert res["train"]["top_sha256"] == ref["train"]["top_sha256"]
    for split in ("train", "aux", "test"):
        for i in range(2):
            a = np.load(tmp_path / "inproc" / "messages" / f"{split}_p{i}.npy")
            b = np.load(tmp_path / "grpc" / "messages" / f"{split}_p{i}.npy")
            assert a.tobytes() == b.tobytes()
    za, zb = np.load(tmp_path / "inproc" / "splits.npz"), np.load(tmp_path / "grpc" / "splits.npz")
    assert np.array_equal(za["pred_test"], zb["pred_test"])
    assert res["train"]["test_acc"] == ref["train"]["test_acc"]


def _kill_at_step(monkeypatch, proc, sig, when):
    from trustlab.vfl import label

    real = label.LabelParty._exchange_step

    def hooked(self, epoch, step, grads, positions):
        if step == 4 and "t" not in when:
            os.kill(proc.pid, sig)
            when["t"] = time.monotonic()
        return real(self, epoch, step, grads, positions)

    monkeypatch.setattr(label.LabelParty, "_exchange_step", hooked)


@pytest.mark.net
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_lost_party_times_out(fed, tmp_path, monkeypatch, sig):
    root, files, pki = fed
    with party_servers(files, pki, tmp_path / "state") as servers:
        pf = write_parties_yaml(tmp_path / "parties.yaml", pki, [a for _, a, _ in servers])
        when = {}
        _kill_at_step(monkeypatch, servers[1][2], sig, when)
        with pytest.raises(PartyTimeoutError) as e:
            train(_grpc_cfg(_cfg(), pf), tmp_path / "run", parties_file=str(pf))
        elapsed = time.monotonic() - when["t"]
    assert elapsed <= TIMEOUT + 5
    assert e.value.exit_code == 4 and e.value.party == 1 and servers[1][1] in str(e.value)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "failed" and res["error"]["party"] == 1 and res["error"]["step"] == 4


@pytest.mark.net
def test_rogue_or_missing_client_certificate_is_named_quickly(fed, tmp_path):
    """A refused client certificate is a TLS error within seconds, not 'unreachable' after connect_timeout_s."""
    root, files, pki = fed
    cfg = _grpc_cfg(_cfg(), "unused", connect_timeout_s=60)
    with party_servers(files, pki, tmp_path / "state") as servers:
        addrs = [a for _, a, _ in servers]
        pf = write_parties_yaml(tmp_path / "rogue.yaml", pki, addrs, pki["rogue.crt"], pki["rogue.key"])
        t0 = time.monotonic()
        with pytest.raises(TLSRefusedError, match="TLS") as e:
            train(cfg, tmp_path / "rogue", parties_file=str(pf))
        assert time.monotonic() - t0 < 20 and "client certificate" in str(e.value) and e.value.exit_code == 4
        ca = open(pki["ca"], "rb").read()
        nocert = lambda addr: grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=ca))  # noqa
        from trustlab.vfl.train import build_transport

        t0 = time.monotonic()
        with pytest.raises(TLSRefusedError, match="TLS"):
            build_transport(cfg, tmp_path, parties_file=str(pf), channel_factory=nocert)
        assert time.monotonic() - t0 < 20
        procs = [p for _, _, p in servers]
    logs = "".join(getattr(p, "output", "") for p in procs)
    assert "hello received" not in logs  # no request reached a handler


@pytest.mark.net
def test_party_certificate_with_the_wrong_usage_is_named(fed, tmp_path):
    """A party server presenting a clientAuth-only certificate (made without our checks) is refused by A's TLS
    with a clear error naming the certificate problem, at once."""
    from concurrent import futures

    from trustlab.vfl.pki import build_certificate, load_ca, write_pair
    from trustlab.vfl.transport.tls import read_pem

    root, files, pki = fed
    ca_key, ca_cert = load_ca(Path(pki["ca"]).parent)
    k, c = build_certificate("bad-party", ca_key, ca_cert.subject, usage="clientAuth", hosts=("127.0.0.1",))
    crt, key = write_pair(tmp_path, "bad", k, c)
    server = grpc.server(futures.ThreadPoolExecutor(1))
    creds = grpc.ssl_server_credentials([(read_pem(key, "key"), read_pem(crt, "cert"))],
                                        root_certificates=read_pem(pki["ca"], "ca"), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        pf = write_parties_yaml(tmp_path / "p.yaml", pki, [f"127.0.0.1:{port}"])
        cfg = _grpc_cfg(load_config(None, {"data": {"n_parties": 1}, "train": {"epochs": 1}}), pf,
                        connect_timeout_s=60)
        from trustlab.vfl.train import build_transport

        t0 = time.monotonic()
        with pytest.raises(TLSRefusedError, match="certificate") as e:
            build_transport(cfg, tmp_path, parties_file=str(pf))
        assert time.monotonic() - t0 < 20
        assert "purpose" in str(e.value) or "usage" in str(e.value), str(e.value)
    finally:
        server.stop(0)


@pytest.mark.net
def test_resume_never_uses_another_runs_party_checkpoint(fed, tmp_path, monkeypatch):
    """Kill run A (seed 0) mid-training, run B (seed 1) to the end on the same parties and state folders, resume A:
    it equals an uninterrupted seed-0 run; a checkpoint of B planted in A's place is refused; each run keeps only
    its last two party checkpoints."""
    from trustlab.runtime import Interrupted
    from trustlab.vfl import label

    root, files, pki = fed
    cfg_a, cfg_b = _cfg(epochs=3), _cfg(epochs=3, seed=1)
    ref = train(cfg_a, tmp_path / "ref", log=lambda *_: None).results["train"]
    real = label.LabelParty._exchange_step

    def cut(self, epoch, step, grads, positions):
        if epoch == 2 and step == 1 and self.cfg.train.seed == 0:
            raise KeyboardInterrupt
        return real(self, epoch, step, grads, positions)

    with party_servers(files, pki, tmp_path / "state") as servers:
        pf = write_parties_yaml(tmp_path / "parties.yaml", pki, [a for _, a, _ in servers])
        monkeypatch.setattr(label.LabelParty, "_exchange_step", cut)
        with pytest.raises(Interrupted):
            train(_grpc_cfg(cfg_a, pf), tmp_path / "a", parties_file=str(pf), log=lambda *_: None)
        monkeypatch.setattr(label.LabelParty, "_exchange_step", real)
        train(_grpc_cfg(cfg_b, pf), tmp_path / "b", parties_file=str(pf), log=lambda *_: None)
        rid_a, rid_b = ((tmp_path / r / "run_id").read_text().strip() for r in ("a", "b"))
        state = tmp_path / "state" / "p1"
        assert sorted(p.name for p in (state / rid_a).iterdir()) == ["epoch_1.pt", "epoch_2.pt"]
        assert sorted(p.name for p in (state / rid_b).iterdir()) == ["epoch_2.pt", "epoch_3.pt"]
        mine = (state / rid_a / "epoch_2.pt").read_bytes()
        (state / rid_a / "epoch_2.pt").write_bytes((state / rid_b / "epoch_2.pt").read_bytes())
        with pytest.raises(PartyError, match="another run") as e:
            train(_grpc_cfg(cfg_a, pf), tmp_path / "a", resume=True, parties_file=str(pf), log=lambda *_: None)
        assert "party 1" in str(e.value)
        (state / rid_a / "epoch_2.pt").write_bytes(mine)
        res = train(_grpc_cfg(cfg_a, pf), tmp_path / "a", resume=True, parties_file=str(pf),
                    log=lambda *_: None).results["train"]
    assert res["party_sha256"] == ref["party_sha256"] and res["top_sha256"] == ref["top_sha256"]


@pytest.mark.filterwarnings("ignore:party server without TLS")
def test_slow_party_setup_does_not_count_against_the_message_deadline(tmp_path, monkeypatch):
    """hello builds the party's model and hashes its ids: on a busy machine that may take longer than one
    message's deadline. It gets connect_timeout_s on top; the steps keep message_timeout_s."""
    from trustlab.vfl.data import load_vertical
    from trustlab.vfl.party import FeatureParty
    from trustlab.vfl.transport.grpc_client import GrpcTransport
    from trustlab.vfl.transport.grpc_server import build_server

    cfg = load_config(None, {"train": {"epochs": 1}, "transport": {"message_timeout_s": 3, "connect_timeout_s": 30}})
    vd = load_vertical(cfg)
    real = FeatureParty._hello

    def slow_hello(self, h, a):
        time.sleep(4.5)  # > message_timeout_s
        return real(self, h, a)

    monkeypatch.setattr(FeatureParty, "_hello", slow_hello)
    servers = [build_server(FeatureParty(i, p, tmp_path / f"s{i}"), "127.0.0.1:0", insecure=True,
                            log=lambda *_: None) for i, p in enumerate(vd.parties)]
    try:
        with pytest.warns(UserWarning, match="plaintext"):
            t = GrpcTransport([(i, f"127.0.0.1:{port}", None, None, None) for i, (_, port) in enumerate(servers)],
                              cfg.transport, insecure=True)
        t.connect()
        res = train(cfg, tmp_path / "run", transport=t, log=lambda *_: None)
        assert res.test_acc > 0.5 and res.results["train"]["test_acc"] == res.test_acc
    finally:
        for srv, _ in servers:
            srv.stop(0)


@pytest.mark.net
@pytest.mark.parametrize("fault,err,text", [("bad-shape@1", MalformedMessageError, "msg shape"),
                                            ("raise@1", PartyError, "ValueError")])
def test_faulty_party(fed, tmp_path, fault, err, text):
    root, files, pki = fed
    with party_servers(files, pki, tmp_path / "state", faults={1: fault},
                       extra_env={"TRUSTLAB_VFL_FAULTS": "1"}) as servers:
        pf = write_parties_yaml(tmp_path / "parties.yaml", pki, [a for _, a, _ in servers])
        with pytest.raises(err, match=text) as e:
            train(_grpc_cfg(_cfg(), pf), tmp_path / "run", parties_file=str(pf))
    assert "party 1" in str(e.value) and e.value.exit_code == 4


# --- the client against a fake channel --------------------------------------------------------
class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._c, self._d = code, details

    def code(self):
        return self._c

    def details(self):
        return self._d


class FakeChannel:
    def __init__(self, outcome):
        self.outcome = outcome

    def unary_unary(self, method):
        outcome = self.outcome

        class Call:
            def future(self, req, timeout=None):
                class Fut:
                    def result(self):
                        if isinstance(outcome, Exception):
                            raise outcome
                        return outcome

                    def cancel(self):
                        pass
                return Fut()
        return Call()

    def close(self):
        pass


@pytest.mark.parametrize("code,details,err,text", [
    (grpc.StatusCode.UNAVAILABLE, "Socket closed", PartyTimeoutError, "gone or unreachable"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "", PartyTimeoutError, "no reply within"),
    (grpc.StatusCode.INTERNAL, "ValueError: boom", PartyError, "ValueError: boom"),
    (grpc.StatusCode.INTERNAL, "ProtocolMismatchError: bad id", PartyError, "bad id"),
    (grpc.StatusCode.UNKNOWN, "Exception calling application", PartyError, "UNKNOWN"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "too big", PartyError, "too large"),
])
def test_client_maps_status_codes(code, details, err, text):
    from trustlab.vfl.transport.grpc_client import GrpcTransport

    t = GrpcTransport([(0, "10.0.0.1:7443", None, None, None)], _cfg().transport,
                      channel_factory=lambda a: FakeChannel(FakeRpcError(code, details)))
    with pytest.raises(err, match=text) as e:
        t.exchange("step", [b"x"], 0, 3)
    assert e.value.party == 0 and "10.0.0.1:7443" in str(e.value)


def test_client_rejects_malformed_reply():
    from trustlab.vfl.label import LabelParty
    from trustlab.vfl.data import load_vertical
    from trustlab.vfl.transport.grpc_client import GrpcTransport

    cfg = _cfg()
    t = GrpcTransport([(0, "10.0.0.1:7443", None, None, None)], cfg.transport,
                      channel_factory=lambda a: FakeChannel(b"\x05\x00\x00\x00{}"))
    lp = LabelParty(cfg, load_vertical(cfg).labels, t, "/tmp/unused")
    with pytest.raises(MalformedMessageError, match="party 0"):
        lp.connect()


def test_insecure_off_loopback_is_refused():
    from trustlab.vfl.transport.grpc_client import GrpcTransport
    from trustlab.vfl.transport.grpc_server import build_server

    with pytest.raises(ConfigError, match="loopback"):
        GrpcTransport([(0, "10.1.2.3:7443", None, None, None)], _cfg().transport, insecure=True)
    with pytest.raises(ConfigError, match="loopback"):
        build_server(None, "0.0.0.0:0", insecure=True)


def test_missing_certificate_file_is_named(tmp_path):
    from trustlab.vfl.transport.grpc_client import GrpcTransport

    with pytest.raises(ConfigError, match="nope.crt"):
        GrpcTransport([(0, "127.0.0.1:1", None, None, None)], _cfg().transport, ca=str(tmp_path / "nope.crt"),
                      cert=str(tmp_path / "a"), key=str(tmp_path / "b"))
