"""The ``trustlab`` command line (typer). Lab sub-apps are thin layers over the labs' verbs."""
