"""``python -m mixvi.cli``: the same as the ``mixvi`` command."""

from mixvi.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
