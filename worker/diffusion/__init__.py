"""Diffusers support for the ``image`` handler: resident pipelines, schedulers, LoRA, previews, outputs.

Everything here imports torch and diffusers lazily, inside the process that runs jobs.
"""
