"""lmforge: pretrain transformer language models of all three families and put them to work."""

__version__ = "0.1.0"
