"""Recipes: load and validate, resolve a profile, run, check metrics."""
