"""``trustlab data``: the dataset registry."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_datasets() -> None:
    """What exists, whether it is installed here, its size and how to install it."""
    from rich.console import Console
    from rich.table import Table

    from trustlab.data import listing

    table = Table()
    table.add_column("name", no_wrap=True)
    for col in ("kind", "installed", "size", "install"):
        table.add_column(col)
    for row in listing():
        table.add_row(row["name"], row["kind"], "yes" if row["installed"] else "no", row["size"], row["install"])
    Console().print(table)


@app.command("show")
def show(name: str = typer.Argument(..., help="A registry name or a file spec such as npz:FILE or csv:FILE."),
         label: str = typer.Option(None, "--label", help="Label column of a csv:/parquet: table.")) -> None:
    """Load one dataset and print what it holds."""
    from trustlab.data import load
    from trustlab.data.registry import dataset_path_kind

    is_table_file = name.partition(":")[0] in ("csv", "parquet")
    if label is not None and not is_table_file:
        from trustlab.runtime.errors import ConfigError

        raise ConfigError(f"--label applies to csv:/parquet: tables, not {name!r} ({dataset_path_kind(name)})",
                          hint=f"trustlab data show {name}")
    data = load(name, label_column=label) if is_table_file else load(name)
    typer.echo(f"{data.name}: {type(data).__name__}, {len(data)} items")
    for attr in ("shape", "classes", "columns"):
        if hasattr(data, attr):
            typer.echo(f"  {attr}: {getattr(data, attr)}")
