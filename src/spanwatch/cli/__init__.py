"""The command line: wires settings, logging, the store and the daemon together."""


def entry() -> None:
    """The `spanwatch` console script: `spanwatch.cli.main.entry`, imported when called.

    A rebuild's worker processes are spawned, and a spawned process first
    imports the module its parent ran as a script, here the console script,
    which imports this package. So this package imports nothing: the CLI
    (pydantic, rich, the daemon) cost every worker half a second and 26 MB.
    """
    from spanwatch.cli.main import entry as run  # noqa: PLC0415 (see above)

    run()
