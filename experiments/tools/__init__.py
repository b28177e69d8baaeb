"""Developer tools: ``behaviour_check`` (same seeds, two commits, identical numbers?)."""
