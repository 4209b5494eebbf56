"""llm-teach: teach a small language model with a larger one (or with itself)."""

__version__ = "0.1.0"
