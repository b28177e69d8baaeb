"""The toy tables (2 and 3: moons and circles)."""
