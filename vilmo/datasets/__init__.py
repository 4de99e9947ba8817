"""Readers for the labelled value data sets (offline only: serving never imports this)."""
