"""Curation stages: plain functions over an in-memory Arrow table of samples that return
``(kept, rejected)``; rejected rows carry ``drop_stage`` and ``drop_reason``."""
