"""instructforge: build instruction-tuning datasets you can trust, and train on them."""

__version__ = "0.1.0"
