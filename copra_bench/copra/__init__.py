"""COPRA: a generator that writes a per-segment LoRA update for a frozen VLM (arXiv 2605.15325)."""
