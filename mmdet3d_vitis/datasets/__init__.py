"""Datasets: the synthetic nuScenes-format generator (embedded default data)."""
