"""The paper's tables, benchmarks and studies, built on ``gedi_core`` and ``gedi_nesy`` (never the
reverse). Run each script as a module from the repository root, e.g.
``python -m experiments.nesy.table6 --help``; docs/experiments.md says what each one does."""
