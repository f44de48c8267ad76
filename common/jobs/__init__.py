"""Job kinds: one module per kind registers its spec (``registry.load_builtin_kinds`` imports them all)."""
