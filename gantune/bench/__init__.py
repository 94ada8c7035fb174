"""``make bench``: speed and memory figures, printed as ratios against this machine's own convolution rate.

Run ``python -m gantune.bench [--quick] [--only generator,hyper,optim,align,loading,memory,gpu,threads]``. Every
section prints plain lines; nothing here is a pass/fail test. ``generator`` (which also holds the runner and the conv
rate), ``hyper``, ``optim``, ``align``, ``loading``, ``memory``, ``gpu`` and ``threads`` are modules of this package.
The package itself imports nothing, so that ``python -m gantune.bench`` can set up its process
(:func:`gantune.process.configure_process`) before torch loads.
"""
