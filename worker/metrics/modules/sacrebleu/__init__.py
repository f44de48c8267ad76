"""Package marker so setuptools ships sacrebleu.py; evaluate loads the script by path, not by import."""
