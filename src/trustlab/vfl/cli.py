"""``trustlab vfl``: train, attack, sweep, demo, report, export-parties, party, local.

No torch or grpc import at module level: each command imports what it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trustlab.runtime.cli_options import (config_option, out_option, resume_option, seed_option, threads_option,
                                          use_threads)

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="HashVFL: hashed vertical federated learning, attacks, detection, multi-host parties.")

ATTACKS_HELP = "Comma-separated subset of whitebox,inverse,label,decode,detect (default: all)."


def _names(text: Optional[str]) -> Optional[tuple[str, ...]]:
    """``a, b,c`` -> ("a", "b", "c"); None stays None."""
    return None if text is None else tuple(a.strip() for a in text.split(",") if a.strip())


OUT_HELP = "Run folder (default runs/vfl-<verb>-<UTC time>)."
RESUME_HELP = "Resume the run folder (default) or start it afresh, discarding its checkpoints."
# hidden aliases kept for old command lines: --run-dir for --out, --force for --no-resume
RUN_DIR_ALIAS = typer.Option(None, "--run-dir", hidden=True, help="Deprecated spelling of --out.")
FORCE_ALIAS = typer.Option(False, "--force", hidden=True, help="Deprecated spelling of --no-resume.")


def _out(out: Optional[Path], run_dir: Optional[Path]) -> Optional[Path]:
    return out if out is not None else run_dir


CONFIG_HELP = "YAML config (a path, or a shipped name: digits, breast_cancer, wine, mnist5k, fashion_mnist, adult)."


def _overrides(dataset=None, defence=None, code_len=None, embed_dim=None, epochs=None, seed=None, transport=None,
               parties=None) -> dict:
    return {"data": {"name": dataset}, "defence": {"kind": defence, "code_len": code_len, "embed_dim": embed_dim},
            "train": {"epochs": epochs, "seed": seed}, "transport": {"kind": transport, "parties": parties}}


def _cfg(config, dataset=None, defence=None, code_len=None, embed_dim=None, epochs=None, seed=None, transport=None,
         parties=None):
    from .config import load_config

    return load_config(config, _overrides(dataset, defence, code_len, embed_dim, epochs, seed,
                                                          transport, parties))


def _echo_summary(res: dict) -> None:
    tr = res.get("train", {})
    typer.echo(f"test accuracy {tr.get('test_acc', float('nan')):.4f}  train accuracy {tr.get('train_acc', 0):.4f}  "
               f"({tr.get('wall_s', 0):.1f} s)")
    for name, a in (res.get("attacks") or {}).items():
        if isinstance(a, dict) and a.get("mse") is not None:
            typer.echo(f"  {name:20s} MSE {a['mse']:.4f}")
        elif isinstance(a, dict) and "acc" in a:
            typer.echo(f"  {name:20s} acc {a['acc']:.3f} (majority {a['majority']:.3f}, raw {a['raw_features']:.3f})")
    for name, b in (res.get("baselines") or {}).items():
        if b.get("mse") is not None:
            typer.echo(f"  baseline {name:11s} MSE {b['mse']:.4f}")
    for name, d in (res.get("detection") or {}).items():
        if "auroc" in d:
            typer.echo(f"  detection {name:10s} AUROC {d['auroc']:.3f}")


PARTIES_FILE_HELP = "parties.yaml: A's CA, certificate and key and each party's id and address (grpc)."


@app.command()
def train(config: Optional[str] = config_option(None, help=CONFIG_HELP),
          dataset: Optional[str] = typer.Option(None, "--dataset", help="Override data.name (a registry name, "
                                                "or csv:/parquet:/npz:/idx: PATH)."),
          defence: Optional[str] = typer.Option(None, "--defence", help="none|hash|gaussian|laplace|gsparse|hash_laplace"),
          code_len: Optional[int] = typer.Option(None, "--code-len", help="Override defence.code_len (L bits)."),
          embed_dim: Optional[int] = typer.Option(None, "--embed-dim", help="Override defence.embed_dim (width of "
                                                  "unhashed messages)."),
          epochs: Optional[int] = typer.Option(None, "--epochs", help="Override train.epochs."),
          seed: Optional[int] = seed_option(None, help="Override train.seed."),
          transport: Optional[str] = typer.Option(None, "--transport", help="inproc|grpc"),
          parties: Optional[str] = typer.Option(None, "--parties", help=PARTIES_FILE_HELP),
          out: Optional[Path] = out_option(None, help=OUT_HELP),
          resume: bool = resume_option(help=RESUME_HELP),
          run_dir: Optional[Path] = RUN_DIR_ALIAS, force: bool = FORCE_ALIAS,
          attack: bool = typer.Option(False, "--attack/--no-attack", help="Run every attack after training."),
          threads: Optional[int] = threads_option(None)) -> None:
    """Train vanilla VFL or a defence (in-process, or over gRPC with --transport grpc --parties F).

    The same command with `--out D` resumes an interrupted run with the config saved in D."""
    use_threads(threads)
    from trustlab.runtime import default_run_path

    out, resume = _out(out, run_dir), resume and not force
    from .train import config_for_run

    cfg = config_for_run(config, out, resume,
                         _overrides(dataset, defence, code_len, embed_dim, epochs, seed, transport, parties))
    if cfg.transport.kind == "grpc":
        _require_net()
    from .train import train as do_train

    run_dir = out or default_run_path("vfl", "train")
    res = do_train(cfg, run_dir, resume=resume, force=not resume, parties_file=parties or cfg.transport.parties)
    if attack:
        from .evaluate import evaluate

        res = evaluate(res)
    _echo_summary(res.results)
    _render(run_dir)
    typer.echo(f"run folder: {run_dir}")


def _require_net() -> None:
    """grpcio and cryptography, or exit 3 at once with the install command. gRPC's own C-core log lines are off
    unless GRPC_VERBOSITY is set: our errors name the cause in one line."""
    import os

    from trustlab.runtime import require

    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    require("grpc", "pip install grpcio cryptography")
    require("cryptography", "pip install grpcio cryptography")


@app.command()
def attack(out: Optional[Path] = out_option(None, help="The trained run's folder (results are "
                                              "written back into it)."),
           attacks: str = typer.Option("whitebox,inverse,label,decode,detect", "--attacks", help=ATTACKS_HELP),
           target_party: Optional[int] = typer.Option(None, "--target-party", help="Party whose rows are "
                                                      "reconstructed (attack.target_party, default 0)."),
           n_targets: Optional[int] = typer.Option(None, "--n-targets", help="Test rows attacked "
                                                   "(attack.n_targets, default 100; clamped)."),
           run_dir: Optional[Path] = RUN_DIR_ALIAS,
           aux_data: Optional[str] = typer.Option(None, "--aux-data", help="The target party's rows (party{i}.npz)."),
           ref_acc: Optional[float] = typer.Option(None, "--ref-acc", help="Vanilla accuracy MP* for DCS."),
           resume: bool = resume_option(help="Reuse the attacks already recorded in the run folder (attacks.jsonl; "
                                        "default) or run them all again."),
           threads: Optional[int] = threads_option(None)) -> None:
    """Run the attacks, baselines and detection on a trained run's saved messages (an interrupted run of the same
    command resumes: finished attacks are read back)."""
    use_threads(threads)
    from dataclasses import replace

    from .evaluate import evaluate, load_run

    run_dir = _required_out(out, run_dir, "attack")
    cfg = load_run(run_dir)["cfg"]
    ac = cfg.attack
    if target_party is not None:
        ac = replace(ac, target_party=target_party)
    if n_targets is not None:
        ac = replace(ac, n_targets=n_targets)
    res = evaluate(run_dir, tuple(a.strip() for a in attacks.split(",") if a.strip()), ac, aux_data, ref_acc,
                   resume=resume)
    _echo_summary(res.results)
    _render(run_dir)


def _required_out(out: Optional[Path], run_dir: Optional[Path], verb: str) -> Path:
    from trustlab.runtime import ConfigError

    if out is None and run_dir is None:
        raise ConfigError(f"vfl {verb} needs the run folder", hint=f"pass it: trustlab vfl {verb} --out DIR")
    return _out(out, run_dir)


def _render(run_dir: Path) -> None:
    from trustlab.report import render

    from .report import report_section

    md, _ = render(run_dir, sections={"vfl": report_section})
    typer.echo(f"report: {md}")


@app.command()
def sweep(config: Optional[str] = config_option(None, help=CONFIG_HELP + " Default: digits."),
          defences: Optional[str] = typer.Option(None, "--defences",
                                                 help="Default: none,hash,gaussian,laplace,gsparse,hash_laplace."),
          seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds. Default: 0,1,2."),
          param: Optional[str] = typer.Option(None, "--param", help="One defence field and its values, "
                                              "e.g. noise_scale=0.01,0.1,1."),
          attacks: Optional[str] = typer.Option(None, "--attacks", help=ATTACKS_HELP),
          epochs: Optional[int] = typer.Option(None, "--epochs", help="Override train.epochs of every cell."),
          out: Optional[Path] = out_option(None, help=OUT_HELP),
          resume: bool = resume_option(help="Resume the sweep in --out (default: "
                                      "finished cells are skipped) or start it afresh, discarding its cells."),
          force: bool = FORCE_ALIAS, threads: Optional[int] = threads_option(None)) -> None:
    """Defences x seeds (x one parameter) on one harness; resumable per cell; sweep.json/csv and plots.

    Re-running the same command (or `--out D` alone) skips finished cells and resumes an interrupted one."""
    import shlex

    from trustlab.runtime import default_run_path, parse_int_list

    use_threads(threads)

    from .sweep import parse_param, run_sweep, sweep_config_for

    sc = sweep_config_for(out, config, epochs, parse_param(param) if param is not None else None,
                          parse_int_list("--seeds", seeds) if seeds is not None else None, _names(defences),
                          _names(attacks), resume and not force)
    resume = resume and not force
    out = out or default_run_path("vfl", "sweep")
    res = run_sweep(sc, out, force=not resume, resume_hint=f"trustlab vfl sweep --out {shlex.quote(str(out))}")
    for r in res["rows"]:
        typer.echo(f"{r['label']:28s} acc {r['acc']['mean']:.3f}±{r['acc']['std']:.3f}  "
                   f"inverse MSE {r['inverse_mse']['mean'] or float('nan'):.4f}")
    typer.echo(f"sweep folder: {out}")


def run_demo(out: Path, quick: bool = True, resume: bool = True) -> Path:
    """Digits, 2 parties, vanilla vs HashVFL (L=16) with every attack, baseline, detection and the report.
    Running it again into the same folder skips finished cells and resumes an interrupted one."""
    import shlex

    from .config import load_config
    from .sweep import DEFAULT_DEFENCES, SweepConfig, run_sweep

    cfg = load_config("digits")
    if quick:
        sc = SweepConfig(cfg, ("none", "hash"), (0,))
    else:
        sc = SweepConfig(cfg, DEFAULT_DEFENCES, (0, 1, 2))
    out = Path(out)
    hint = f"trustlab vfl demo --out {shlex.quote(str(out))}" + ("" if quick else " --full")
    run_sweep(sc, out, log=lambda m: typer.echo(m), verb="demo", force=not resume, resume_hint=hint)
    return out


@app.command()
def demo(quick: bool = typer.Option(True, "--quick/--full", help="Vanilla vs hash on one seed (default), or "
                                    "all six defences on seeds 0,1,2."),
         out: Path = out_option(Path("runs/vfl-demo"), help="Run folder."),
         resume: bool = resume_option(help=RESUME_HELP),
         force: bool = FORCE_ALIAS, threads: Optional[int] = threads_option(None)) -> None:
    """Offline demo on digits (about a minute with --quick); the same command resumes an interrupted demo."""
    use_threads(threads)
    run_dir = run_demo(out, quick, resume=resume and not force)
    typer.echo(f"report: {run_dir / 'report.md'}")


@app.command("ls")
def ls() -> None:
    """List the defences and attacks this lab offers, one line each."""
    from trustlab.runtime.registry import format_listing

    from .catalogue import listing

    for title, rows in listing():
        format_listing(title, rows, typer.echo)


@app.command()
def report(out: Optional[Path] = out_option(None, help="A run or sweep folder."),
           run_dir: Optional[Path] = RUN_DIR_ALIAS) -> None:
    """Re-render report.md/report.html for a run or sweep folder."""
    _render(_required_out(out, run_dir, "report"))


@app.command("export-parties")
def export_parties(config: Optional[str] = config_option("digits", help=CONFIG_HELP),
                   out: Path = out_option(..., help="Folder for label.npz and party{i}.npz."),
                   seed: Optional[int] = seed_option(None, help="Override train.seed (the split).")) -> None:
    """Write label.npz and party{i}.npz: one file per data owner."""
    from .data import export_parties as do_export

    for p in do_export(_cfg(config, seed=seed), out):
        typer.echo(str(p))


@app.command()
def party(party_id: int = typer.Option(..., "--party-id", help="This party's id (0..N-1, as in parties.yaml)."),
          data: Path = typer.Option(..., "--data", help="This party's npz (X, ids)."),
          listen: str = typer.Option(..., "--listen", help="HOST:PORT (port 0 picks a free one)."),
          tls_cert: Optional[str] = typer.Option(None, "--tls-cert", help="This server's certificate (serverAuth)."),
          tls_key: Optional[str] = typer.Option(None, "--tls-key", help="Its private key."),
          client_ca: Optional[str] = typer.Option(None, "--client-ca", help="CA that signed the label party's "
                                                  "certificate."),
          insecure: bool = typer.Option(False, "--insecure", help="No TLS; loopback only."),
          state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="Checkpoint folder (default "
                                                   "party<ID>-state)."),
          share_model: bool = typer.Option(False, "--share-model", help="Allow the white-box audit to fetch weights."),
          device: str = typer.Option("cpu", "--device", help="Torch device of this party's model."),
          max_message_mb: int = typer.Option(64, "--max-message-mb", help="Largest gRPC message accepted."),
          fault: Optional[str] = typer.Option(None, "--fault", hidden=True), threads: Optional[int] = threads_option(None)) -> None:
    """A long-lived feature-party server (mutual TLS); SIGTERM stops it after the current call."""
    from trustlab.runtime import ConfigError, configure_threads

    from .transport.address import parse_address

    host, port = parse_address(listen, "--listen", allow_zero=True)
    _require_net()
    if not insecure:
        for flag, v in (("--tls-cert", tls_cert), ("--tls-key", tls_key), ("--client-ca", client_ca)):
            if v is None:
                raise ConfigError(f"{flag} is required (mutual TLS)", hint="pass --tls-cert, --tls-key and "
                                                                          "--client-ca, or --insecure on loopback")
        from .transport.tls import check_identity, load_certificate

        check_identity(tls_cert, tls_key, "serverAuth", "a party server")
        load_certificate(client_ca, "client CA")
    if port:
        from .transport.address import check_bindable

        check_bindable(host, port, "--listen")
    use_threads(threads)
    configure_threads()  # imports torch: after every check of the command line
    from .data import load_party_file
    from .party import FeatureParty
    from .transport.grpc_server import serve_party

    fp = FeatureParty(party_id, load_party_file(data), state_dir or Path(f"party{party_id}-state"), share_model,
                      device, fault)
    serve_party(fp, listen, tls_cert, tls_key, client_ca, insecure, max_message_mb)


@app.command()
def local(n_parties: int = typer.Option(2, "--n-parties", help="Number of feature-party servers "
                                        "(data.n_parties)."),
          config: Optional[str] = config_option("digits", help=CONFIG_HELP),
          epochs: Optional[int] = typer.Option(None, "--epochs", help="Override train.epochs."),
          defence: Optional[str] = typer.Option(None, "--defence", help="none|hash|gaussian|laplace|gsparse|hash_laplace"),
          out: Optional[Path] = out_option(None, help=OUT_HELP),
          attack: bool = typer.Option(True, "--attack/--no-attack", help="Run every attack after training."),
          run_dir: Optional[Path] = RUN_DIR_ALIAS,
          parties: Optional[int] = typer.Option(None, "--parties", hidden=True, help="Deprecated: --n-parties."),
          threads: Optional[int] = threads_option(None)) -> None:
    """N loopback party servers with throwaway certificates, trained over mutual-TLS gRPC.

    The same command with the same --out resumes an interrupted run."""
    import shlex

    from trustlab.runtime import default_run_path

    from .local import run_local

    use_threads(threads)
    _require_net()
    parties = n_parties if parties is None else parties
    cfg = _cfg(config, defence=defence, epochs=epochs)
    from .config import with_

    cfg = with_(cfg, data={"n_parties": parties})
    run_dir = _out(out, run_dir) or default_run_path("vfl", "local")
    hint = " ".join(["trustlab vfl local --n-parties", str(parties), "--config", shlex.quote(str(config)),
                     *(["--epochs", str(epochs)] if epochs is not None else []),
                     *(["--defence", shlex.quote(defence)] if defence is not None else []),
                     "--out", shlex.quote(str(run_dir)), *([] if attack else ["--no-attack"])])
    res = run_local(cfg, run_dir, attack=attack, log=typer.echo, resume_hint=hint)
    _echo_summary(res)
    _render(run_dir)
    typer.echo(f"run folder: {run_dir}")


pki_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      help="A federation's certificates: one CA, a serverAuth certificate per party, A's clientAuth one.")
app.add_typer(pki_app, name="pki")


@pki_app.command("ca")
def pki_ca(out: Path = out_option(..., help="Folder for ca.crt and ca.key (0600; keep it offline)."),
           name: str = typer.Option("trustlab-vfl federation CA", "--name", help="The CA's common name."),
           days: int = typer.Option(3650, "--days", min=1, help="Validity in days.")) -> None:
    """Make the federation CA (ca.crt goes to every party and to the label party)."""
    from .pki import make_ca

    crt, key = make_ca(out, name, days)
    typer.echo(f"wrote {crt} and {key}")


@pki_app.command("party")
def pki_party(ca_dir: Path = typer.Option(..., "--ca-dir", help="Folder holding ca.crt and ca.key."),
              party_id: int = typer.Option(..., "--id", min=0, help="The party's id."),
              host: list[str] = typer.Option(..., "--host", help="Host name or IP the label party dials (repeatable)."),
              out: Path = out_option(..., help="Folder for party{ID}.crt and party{ID}.key."),
              days: int = typer.Option(825, "--days", min=1, help="Validity in days.")) -> None:
    """A party server's certificate (serverAuth, subjectAltName = --host): party{ID}.crt and party{ID}.key."""
    from .pki import issue

    crt, key = issue(ca_dir, out, "party", f"party{party_id}", tuple(host), days)
    typer.echo(f"wrote {crt} and {key}")


@pki_app.command("label")
def pki_label(ca_dir: Path = typer.Option(..., "--ca-dir", help="Folder holding ca.crt and ca.key."),
              out: Path = out_option(..., help="Folder for label.crt and label.key."),
              days: int = typer.Option(825, "--days", min=1, help="Validity in days.")) -> None:
    """The label party's client certificate (clientAuth): label.crt and label.key."""
    from .pki import issue

    crt, key = issue(ca_dir, out, "label", "label", (), days)
    typer.echo(f"wrote {crt} and {key}")


def report_section(results: dict, run_dir: Path) -> list:
    from .report import report_section as section

    return section(results, run_dir)
