"""Metric scripts loaded by path with evaluate.load; a package only so setuptools ships the .py files."""
