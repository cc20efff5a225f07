"""``python -m flowlens``: the same as the ``flowlens`` command."""

from flowlens.surfaces.cli import main

main()
