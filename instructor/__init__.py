"""The instructor's tools, outside the package students get; one command line, ``python -m instructor <verb>``."""
