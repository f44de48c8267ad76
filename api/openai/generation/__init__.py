"""``/v1/chat/completions`` and ``/v1/completions`` on gpuq's ``chat`` and ``text-generation`` tasks."""
