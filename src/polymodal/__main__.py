"""`python -m polymodal` is the `polymodal` command."""

from polymodal.cli import app

app()
