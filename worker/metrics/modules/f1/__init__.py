"""Package marker so setuptools ships f1.py; evaluate loads the script by path, not by import."""
