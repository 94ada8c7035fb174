"""Measuring the methods: reconstruction quality and face-detection rates (``reconstruction``), and editability
along the paths between inversions (``interpolation``)."""
