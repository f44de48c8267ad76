"""Package marker so setuptools ships accuracy.py; evaluate loads the script by path, not by import."""
