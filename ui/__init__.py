"""The demo web UI (``gpuq ui``): a small Gradio app that submits jobs through the Python client."""
