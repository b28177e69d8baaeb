"""The names of the files a run folder holds."""

CHECKPOINT = "checkpoint.pt"  # the checkpoint's file name inside a run folder
METRICS = "metrics.json"
CONFIG = "config.yaml"
LOCK = ".lock"  # the writer's PID and host while a run is being written
PROGRAM = "program.pl"  # the program text a gedi-nesy run trained on
INPUTS = "inputs.json"  # the path and SHA-256 of each input file of the run
#: the files a run folder owns whether or not they exist yet: no other command writes them
RUN_FILES = (CHECKPOINT, METRICS, CONFIG, LOCK, PROGRAM, INPUTS, "log.csv", "epochs.csv", "losses.png", "clusters.png",
             "density.png", "buffer.png", "classes.png", "confusion.png")
