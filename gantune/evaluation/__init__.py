"""Measuring the methods: reconstruction quality (``reconstruction``; its held-out images in ``data``, scores in
``stats`` and ``lpips``, the papers' orderings in ``verdicts``, tables in ``report``), face-detection rates
(``detection``), and editability along the paths between inversions (``interpolation``)."""
