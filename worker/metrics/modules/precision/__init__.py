"""Package marker so setuptools ships precision.py; evaluate loads the script by path, not by import."""
