"""Package marker so setuptools ships recall.py; evaluate loads the script by path, not by import."""
