"""``python -m gantune.bench`` (``make bench``)."""

from . import main

main()
