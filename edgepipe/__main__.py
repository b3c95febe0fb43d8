"""``edgepipe`` and ``python -m edgepipe``. A fully cached run that its no-op record proves
unchanged is answered before the CLI (typer, rich, pydantic) is imported (edgepipe/noop_run.py);
everything else goes to the CLI."""

import sys


def main() -> None:
    from edgepipe.noop_run import serve

    serve(sys.argv[1:])  # exits when it served the run; returns on any doubt
    from edgepipe.cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # not when multiprocessing re-imports the main module
    main()
