"""Prefect flows over the dataforge library (the library itself never imports Prefect)."""
