"""``trustlab models``: the causal-LM registry and the SmolLM2 cache."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """Registered model names, what they are, whether they are available and cached here."""
    from rich.console import Console
    from rich.table import Table

    from trustlab.models.causal_lm import listing

    table = Table()
    table.add_column("name", no_wrap=True)
    for col in ("what", "available", "cached"):
        table.add_column(col)
    for row in listing():
        table.add_row(row["name"], row["what"], "yes" if row["available"] else "no", "yes" if row["cached"] else "no")
    Console().print(table)


@app.command("prepare")
def prepare_model(name: str = typer.Argument("smollm2-135m-instruct", help="Model to convert and cache.")) -> None:
    """Convert a bundled GGUF model once into the safetensors cache, so later loads are fast."""
    from trustlab.models.causal_lm import prepare

    path = prepare(name)
    typer.echo(f"cached {name} at {path}")
