"""``python -m copra_bench sweep``: grids of runs over MLflow, resumable."""
