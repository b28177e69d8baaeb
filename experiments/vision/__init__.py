"""The vision tables (4, 5, 10, 11, 12), the CPU-scale study, the GPU script and the step benchmark."""
