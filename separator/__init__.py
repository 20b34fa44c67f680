"""separator: train music source separation models under Dora."""

__version__ = "0.1.0"
