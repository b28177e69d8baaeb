"""Helpers every experiment shares (result files over seeds, paths and commands as shown)."""
