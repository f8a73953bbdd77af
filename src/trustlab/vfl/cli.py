"""``trustlab vfl``: train, attack, sweep, demo, report, export-parties, party, local.

No torch or grpc import at module level: each command imports what it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="HashVFL: hashed vertical federated learning, attacks, detection, multi-host parties.")

CONFIG_HELP = "YAML config (a path, or a shipped name: digits, breast_cancer, wine, mnist5k, fashion_mnist, adult)."


def shipped_configs() -> Path:
    return Path(__file__).resolve().parent.parent / "configs" / "vfl"


def resolve_config(path: Optional[str]) -> Optional[Path]:
    """A path, or the name of a shipped config (``digits`` or ``configs/vfl/digits.yaml``)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return p
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
    cand = shipped_configs() / f"{stem}.yaml"
    if cand.is_file():
        return cand
    from trustlab.runtime import ConfigError

    names = sorted(q.stem for q in shipped_configs().glob("*.yaml"))
    raise ConfigError(f"config {path!r} is neither a file nor a shipped config", hint=f"shipped: {', '.join(names)}")


def _cfg(config, dataset=None, defence=None, code_len=None, embed_dim=None, epochs=None, seed=None, transport=None,
         parties=None):
    from .config import load_config

    tr = {"epochs": epochs, "seed": seed}
    return load_config(resolve_config(config), {
        "data": {"name": dataset}, "defence": {"kind": defence, "code_len": code_len, "embed_dim": embed_dim},
        "train": tr, "transport": {"kind": transport, "parties": parties}})


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


@app.command()
def train(config: Optional[str] = typer.Option(None, "--config", help=CONFIG_HELP),
          dataset: Optional[str] = typer.Option(None, "--dataset"),
          defence: Optional[str] = typer.Option(None, "--defence", help="none|hash|gaussian|laplace|gsparse|hash_laplace"),
          code_len: Optional[int] = typer.Option(None, "--code-len"),
          embed_dim: Optional[int] = typer.Option(None, "--embed-dim"),
          epochs: Optional[int] = typer.Option(None, "--epochs"),
          seed: Optional[int] = typer.Option(None, "--seed"),
          transport: Optional[str] = typer.Option(None, "--transport", help="inproc|grpc"),
          parties: Optional[str] = typer.Option(None, "--parties", help="parties.yaml (grpc)"),
          run_dir: Optional[Path] = typer.Option(None, "--run-dir"),
          resume: bool = typer.Option(False, "--resume"),
          force: bool = typer.Option(False, "--force"),
          attack: bool = typer.Option(False, "--attack/--no-attack", help="Run every attack after training.")) -> None:
    """Train vanilla VFL or a defence (in-process, or over gRPC with --transport grpc --parties F)."""
    from trustlab.runtime import default_run_path

    cfg = _cfg(config, dataset, defence, code_len, embed_dim, epochs, seed, transport, parties)
    from .train import train as do_train

    run_dir = run_dir or default_run_path("vfl", "train")
    res = do_train(cfg, run_dir, resume=resume, force=force, parties_file=parties)
    if attack:
        from .evaluate import evaluate

        res = evaluate(run_dir)
    _echo_summary(res)
    _render(run_dir)
    typer.echo(f"run folder: {run_dir}")


@app.command()
def attack(run_dir: Path = typer.Option(..., "--run-dir"),
           attacks: str = typer.Option("whitebox,inverse,label,decode,detect", "--attacks"),
           target_party: Optional[int] = typer.Option(None, "--target-party"),
           n_targets: Optional[int] = typer.Option(None, "--n-targets"),
           aux_data: Optional[str] = typer.Option(None, "--aux-data", help="The target party's rows (party{i}.npz)."),
           ref_acc: Optional[float] = typer.Option(None, "--ref-acc", help="Vanilla accuracy MP* for DCS.")) -> None:
    """Run the attacks, baselines and detection on a trained run's saved messages."""
    from dataclasses import replace

    from .evaluate import evaluate, load_run

    cfg = load_run(run_dir)["cfg"]
    ac = cfg.attack
    if target_party is not None:
        ac = replace(ac, target_party=target_party)
    if n_targets is not None:
        ac = replace(ac, n_targets=n_targets)
    res = evaluate(run_dir, tuple(a.strip() for a in attacks.split(",") if a.strip()), ac, aux_data, ref_acc)
    _echo_summary(res)
    _render(run_dir)


def _render(run_dir: Path) -> None:
    from trustlab.report import render

    from .report import report_section

    md, _ = render(run_dir, sections={"vfl": report_section})
    typer.echo(f"report: {md}")


@app.command()
def sweep(config: Optional[str] = typer.Option("digits", "--config", help=CONFIG_HELP),
          defences: str = typer.Option("none,hash,gaussian,laplace,gsparse,hash_laplace", "--defences"),
          seeds: str = typer.Option("0,1,2", "--seeds"),
          param: Optional[str] = typer.Option(None, "--param", help="e.g. noise_scale=0.01,0.1,1"),
          epochs: Optional[int] = typer.Option(None, "--epochs"),
          out: Optional[Path] = typer.Option(None, "--out")) -> None:
    """Defences x seeds (x one parameter) on one harness; resumable per cell; sweep.json/csv and plots."""
    from trustlab.runtime import ConfigError, default_run_path

    from .sweep import SweepConfig, parse_param, run_sweep

    name, values = parse_param(param)
    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r} must be integers", hint="e.g. --seeds 0,1,2")
    sc = SweepConfig(_cfg(config, epochs=epochs), tuple(d.strip() for d in defences.split(",") if d.strip()),
                     seed_list, name, values)
    out = out or default_run_path("vfl", "sweep")
    res = run_sweep(sc, out)
    for r in res["rows"]:
        typer.echo(f"{r['label']:28s} acc {r['acc']['mean']:.3f}±{r['acc']['std']:.3f}  "
                   f"inverse MSE {r['inverse_mse']['mean'] or float('nan'):.4f}")
    typer.echo(f"sweep folder: {out}")


def run_demo(out: Path, quick: bool = True) -> Path:
    """Digits, 2 parties, vanilla vs HashVFL (L=16) with every attack, baseline, detection and the report."""
    from .config import load_config
    from .sweep import SweepConfig, run_sweep

    cfg = load_config(shipped_configs() / "digits.yaml")
    if quick:
        sc = SweepConfig(cfg, ("none", "hash"), (0,))
    else:
        sc = SweepConfig(cfg, ("none", "hash", "gaussian", "laplace", "gsparse", "hash_laplace"), (0, 1, 2))
    out = Path(out)
    run_sweep(sc, out, log=lambda m: typer.echo(m), verb="demo")
    return out


@app.command()
def demo(quick: bool = typer.Option(True, "--quick/--full"),
         out: Path = typer.Option(Path("runs/vfl-demo"), "--out")) -> None:
    """Offline demo on digits (about a minute with --quick)."""
    run_dir = run_demo(out, quick)
    typer.echo(f"report: {run_dir / 'report.md'}")


@app.command()
def report(run_dir: Path = typer.Option(..., "--run-dir")) -> None:
    """Re-render report.md/report.html for a run or sweep folder."""
    _render(run_dir)


@app.command("export-parties")
def export_parties(config: Optional[str] = typer.Option("digits", "--config", help=CONFIG_HELP),
                   out: Path = typer.Option(..., "--out"),
                   seed: Optional[int] = typer.Option(None, "--seed")) -> None:
    """Write label.npz and party{i}.npz: one file per data owner."""
    from .data import export_parties as do_export

    for p in do_export(_cfg(config, seed=seed), out):
        typer.echo(str(p))


@app.command()
def party(party_id: int = typer.Option(..., "--party-id"),
          data: Path = typer.Option(..., "--data", help="This party's npz (X, ids)."),
          listen: str = typer.Option(..., "--listen", help="HOST:PORT (port 0 picks a free one)."),
          tls_cert: Optional[str] = typer.Option(None, "--tls-cert"),
          tls_key: Optional[str] = typer.Option(None, "--tls-key"),
          client_ca: Optional[str] = typer.Option(None, "--client-ca"),
          insecure: bool = typer.Option(False, "--insecure", help="No TLS; loopback only."),
          state_dir: Optional[Path] = typer.Option(None, "--state-dir"),
          share_model: bool = typer.Option(False, "--share-model", help="Allow the white-box audit to fetch weights."),
          device: str = typer.Option("cpu", "--device"),
          max_message_mb: int = typer.Option(64, "--max-message-mb"),
          fault: Optional[str] = typer.Option(None, "--fault", hidden=True)) -> None:
    """A long-lived feature-party server (mutual TLS); SIGTERM stops it after the current call."""
    from trustlab.runtime import ConfigError, configure_threads

    configure_threads()
    if not insecure:
        for flag, v in (("--tls-cert", tls_cert), ("--tls-key", tls_key), ("--client-ca", client_ca)):
            if v is None:
                raise ConfigError(f"{flag} is required (mutual TLS)", hint="pass --tls-cert, --tls-key and "
                                                                          "--client-ca, or --insecure on loopback")
    from .data import load_party_file
    from .party import FeatureParty
    from .transport.grpc_server import serve_party

    fp = FeatureParty(party_id, load_party_file(data), state_dir or Path(f"party{party_id}-state"), share_model,
                      device, fault)
    serve_party(fp, listen, tls_cert, tls_key, client_ca, insecure, max_message_mb)


@app.command()
def local(parties: int = typer.Option(2, "--parties"),
          config: Optional[str] = typer.Option("digits", "--config", help=CONFIG_HELP),
          epochs: Optional[int] = typer.Option(None, "--epochs"),
          defence: Optional[str] = typer.Option(None, "--defence"),
          run_dir: Optional[Path] = typer.Option(None, "--run-dir"),
          attack: bool = typer.Option(True, "--attack/--no-attack")) -> None:
    """N loopback party servers with throwaway certificates, trained over mutual-TLS gRPC."""
    from trustlab.runtime import default_run_path

    from .local import run_local

    cfg = _cfg(config, defence=defence, epochs=epochs)
    from .config import with_

    cfg = with_(cfg, data={"n_parties": parties})
    run_dir = run_dir or default_run_path("vfl", "local")
    res = run_local(cfg, run_dir, attack=attack, log=typer.echo)
    _echo_summary(res)
    _render(run_dir)
    typer.echo(f"run folder: {run_dir}")


def report_section(results: dict, run_dir: Path) -> list:
    from .report import report_section as section

    return section(results, run_dir)
