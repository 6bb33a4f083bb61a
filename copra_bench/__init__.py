"""copra_bench: a Lightning benchmark for video anomaly detection with vision-language models."""

__version__ = "0.1.0"
