"""Loopback federation: export party files, make a throwaway PKI, start N ``trustlab vfl party`` processes on
127.0.0.1:0 (each in its own process group), train over mutual-TLS gRPC, and stop exactly those processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import yaml

from trustlab.runtime import BackendError, require

LISTEN = re.compile(r"listening on (\S+):(\d+)")
INSTALL = "pip install grpcio cryptography"


@contextmanager
def party_servers(files: list[Path], pki: dict, state: Path, share_model: bool = True, faults=None,
                  timeout: float = 120.0, extra_env=None):
    """Start one party server per file; yields [(pid, address, Popen)]; SIGTERM then SIGKILL after 5 s.

    Readiness is the party's own ``listening on`` line (it prints it once torch is loaded and the port is bound),
    so ``timeout`` only bounds a hung start-up; a party that exits is reported at once with its output."""
    procs = []
    try:
        for i, f in enumerate(files):
            cmd = [sys.executable, "-m", "trustlab.cli.main", "vfl", "party", "--party-id", str(i), "--data", str(f),
                   "--listen", "127.0.0.1:0", "--tls-cert", pki[f"party{i}.crt"], "--tls-key", pki[f"party{i}.key"],
                   "--client-ca", pki["ca"], "--state-dir", str(state / f"p{i}")]
            if share_model:
                cmd.append("--share-model")
            if faults and faults.get(i):
                cmd += ["--fault", faults[i]]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "TRUSTLAB_QUIET": "1", **(extra_env or {})}
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          start_new_session=True, env=env))
        out = []
        for i, p in enumerate(procs):
            addr = _read_port(p, timeout)
            out.append((i, addr, p))
        yield out
    finally:
        stop_all(procs)


def _read_port(p: subprocess.Popen, timeout: float) -> str:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = LISTEN.search(line)
        if m:
            return f"{m.group(1)}:{m.group(2)}"
    code = p.poll()
    how = f"exited with code {code}" if code is not None else f"did not report its port within {timeout:g} s"
    raise BackendError(f"party server {how}: {' | '.join(l.strip() for l in lines if l.strip())[-800:]}",
                       hint="run `trustlab vfl party ...` by hand to see its error")


def stop_all(procs, grace: float = 5.0) -> None:
    """SIGTERM each process group we started, SIGKILL what is left after ``grace`` seconds."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        if p.stdout:
            try:
                p.output = p.stdout.read()
            except (OSError, ValueError):
                p.output = ""
            p.stdout.close()


def write_parties_yaml(path: Path, pki: dict, addresses: list[str], cert: str | None = None,
                       key: str | None = None) -> Path:
    doc = {"ca": pki["ca"], "cert": cert or pki["label.crt"], "key": key or pki["label.key"],
           "parties": [{"id": i, "address": a} for i, a in enumerate(addresses)]}
    path.write_text(yaml.safe_dump(doc))
    return path


def run_local(cfg, run_dir: str | Path, attack: bool = True, log=print, resume_hint: str | None = None) -> dict:
    """Export, certify, serve, train over gRPC, and (with ``attack``) audit with the exported party-0 rows;
    returns the run's results record."""
    require("grpc", INSTALL)  # at once, not after the party processes fail to start
    require("cryptography", INSTALL)
    from .data import export_parties
    from .train import train
    from .transport.tls import make_test_pki

    run_dir = Path(run_dir)
    fed = run_dir / "federation"
    files = export_parties(cfg, fed / "data")
    pki = make_test_pki(fed / "pki", party_ids=range(cfg.data.n_parties))
    with party_servers(files[1:], pki, fed / "state") as servers:
        addrs = [a for _, a, _ in servers]
        log(f"parties listening on {', '.join(addrs)}")
        pf = write_parties_yaml(fed / "parties.yaml", pki, addrs)
        gcfg = replace(cfg, transport=replace(cfg.transport, kind="grpc", parties=str(pf)))
        # the same command again resumes an interrupted run (its parties' state folders persist in run_dir)
        res = train(gcfg, run_dir, resume=True, force=True, parties_file=str(pf), log=log, resume_hint=resume_hint)
    if attack:
        from .evaluate import evaluate

        return evaluate(res, aux_data=str(files[1 + cfg.attack.target_party])).results
    return res.results
