"""Evaluations that go beyond one inversion: paths between inversions (``interpolation``)."""
