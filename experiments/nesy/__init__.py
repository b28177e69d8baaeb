"""MNIST addition and DeepProbLog: Table 6, L_GEN in NeSy, multi-digit sums, DeepProbLog's own script
and examples, engine and training-speed benchmarks."""
