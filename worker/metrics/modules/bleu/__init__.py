"""Package marker so setuptools ships bleu.py; evaluate loads the script by path, not by import."""
