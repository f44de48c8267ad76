"""Package marker so setuptools ships rouge.py; evaluate loads the script by path, not by import."""
