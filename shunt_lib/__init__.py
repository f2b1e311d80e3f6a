"""shunt: one Anthropic-compatible endpoint over several Claude accounts."""

__version__ = "0.1.0"
