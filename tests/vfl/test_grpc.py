"""gRPC parties on 127.0.0.1 with mutual TLS: bit-identical to in-process, timeouts, refused certificates,
malformed replies; plus the client against a fake channel (no network)."""

import json
import os
import signal
import time
from dataclasses import replace

import grpc
import numpy as np
import pytest

from trustlab.runtime import ConfigError
from trustlab.vfl.config import load_config
from trustlab.vfl.data import export_parties
from trustlab.vfl.errors import MalformedMessageError, PartyError, PartyTimeoutError
from trustlab.vfl.local import party_servers, write_parties_yaml
from trustlab.vfl.train import train
from trustlab.vfl.transport.tls import make_test_pki

TIMEOUT = 5


def _cfg(**train_kw):
    return load_config(None, {"train": {"epochs": 1, **train_kw},
                              "transport": {"message_timeout_s": TIMEOUT, "connect_timeout_s": 20}})


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fed")
    files = export_parties(_cfg(), root / "data")
    pki = make_test_pki(root / "pki", party_ids=(0, 1))
    return root, files[1:], pki


def _grpc_cfg(cfg, pf, **transport):
    return replace(cfg, transport=replace(cfg.transport, kind="grpc", parties=str(pf), **transport))


@pytest.mark.net
def test_grpc_is_bit_identical_to_inproc(fed, tmp_path):
    root, files, pki = fed
    cfg = _cfg()
    ref = train(cfg, tmp_path / "inproc")
    with party_servers(files, pki, tmp_path / "state") as servers:
        pf = write_parties_yaml(tmp_path / "parties.yaml", pki, [a for _, a, _ in servers])
        res = train(_grpc_cfg(cfg, pf), tmp_path / "grpc", parties_file=str(pf))
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
def test_rogue_or_missing_client_certificate_is_refused(fed, tmp_path):
    root, files, pki = fed
    cfg = _grpc_cfg(_cfg(), "unused", connect_timeout_s=3)
    with party_servers(files, pki, tmp_path / "state") as servers:
        addrs = [a for _, a, _ in servers]
        pf = write_parties_yaml(tmp_path / "rogue.yaml", pki, addrs, pki["rogue.crt"], pki["rogue.key"])
        with pytest.raises(PartyTimeoutError, match="TLS refused"):
            train(cfg, tmp_path / "rogue", parties_file=str(pf))
        ca = open(pki["ca"], "rb").read()
        nocert = lambda addr: grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=ca))  # noqa
        from trustlab.vfl.train import build_transport

        with pytest.raises(PartyTimeoutError, match="TLS refused"):
            build_transport(cfg, tmp_path, parties_file=str(pf), channel_factory=nocert)
        procs = [p for _, _, p in servers]
    logs = "".join(getattr(p, "output", "") for p in procs)
    assert "hello received" not in logs  # no request reached a handler


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
