"""Shared command-line plumbing for ``tools/*.py``."""
import sys
from typing import Callable, Optional, Sequence

from .errors import UserInputError


def run_cli(main: Callable[[Optional[Sequence[str]]], object]) -> None:
    """Run ``main``; user errors exit with status 2 and a one-line cause."""
    try:
        main(None)
    except UserInputError as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)
