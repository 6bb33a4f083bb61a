"""``python -m copra_bench report``: leaderboard (Markdown + self-contained HTML) from MLflow runs."""
