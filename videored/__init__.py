"""videored: IA-RED² token reduction for vision transformers (video and images)."""

__version__ = "0.1.0"
