"""``python -m gantune.bench`` (``make bench``): the process is set up as the ``gantune`` command sets up its own
(threads, OpenMP waiting, allocator) before torch loads, so the figures are the command's."""

from ..process import configure_process

configure_process()

from .generator import main  # noqa: E402 - torch must load after configure_process

main()
