"""The run folder: ``config.yaml``, ``log.csv``, ``epochs.csv``, ``metrics.json``, checkpoints.

Rules, kept here once for every command of the project:

- every file is written atomically (a temporary file in the same folder, then a rename), so a
  kill at any moment leaves either the old or the new file, never a truncated one;
- a finished run (one with ``metrics.json``) is never overwritten, and an unfinished one only
  continues with ``--resume``;
- ``--resume`` continues only a run whose checkpoint holds the same config (the keys that
  differ are named), and ``config.yaml`` is written only after the checkpoint has loaded;
- a checkpoint that cannot be read is reported in one line, not with a traceback;
- a run folder has one writer: the first write takes an exclusive lock file (``.lock``, holding
  the writer's PID and host); a second writer is refused, a lock whose process is dead is taken
  over with a warning;
- a run keeps the input files it trained on (``program.pl``; the SHA-256 of each input in
  ``inputs.json``, its checkpoint and ``metrics.json``), so that ``--resume`` refuses a changed
  input and the run works after it is moved;
- other commands' outputs (:func:`check_output_file`, :func:`check_output_folder`) never write
  over an existing file or a file a run folder owns, checked before any long work;
- a write that fails (disk full, read-only folder) is one line naming the folder and its free
  space; the temporary file is removed and the previous file kept.

The modules, one job each: :mod:`~gedi_core.runfolder.names` (the file names),
:mod:`~gedi_core.runfolder.atomic` (atomic writes, one line for a failed one),
:mod:`~gedi_core.runfolder.lock` (one writer), :mod:`~gedi_core.runfolder.resume` (config
comparison, state that does not load), :mod:`~gedi_core.runfolder.outputs` (other commands'
outputs) and :mod:`~gedi_core.runfolder.folder` (:class:`RunFolder`, which uses them all).
"""

from gedi_core.checkpoint import load_checkpoint  # re-export: reading a checkpoint file
from gedi_core.runfolder.atomic import (atomic_path, file_digest, free_space, is_write_failure, save_checkpoint,
                                        write_bytes, write_csv, write_error, write_json, write_text, write_yaml)
from gedi_core.runfolder.folder import RunFolder
from gedi_core.runfolder.names import CHECKPOINT, CONFIG, INPUTS, LOCK, METRICS, PROGRAM, RUN_FILES
from gedi_core.runfolder.outputs import check_output_file, check_output_folder, is_run_folder
from gedi_core.runfolder.resume import RESUMABLE_KEYS, config_differences, flatten, resume_errors

__all__ = [
    "CHECKPOINT", "CONFIG", "INPUTS", "LOCK", "METRICS", "PROGRAM", "RESUMABLE_KEYS", "RUN_FILES", "RunFolder",
    "atomic_path", "check_output_file", "check_output_folder", "config_differences", "file_digest", "flatten",
    "free_space", "is_run_folder", "is_write_failure", "load_checkpoint", "resume_errors", "save_checkpoint",
    "write_bytes", "write_csv", "write_error", "write_json", "write_text", "write_yaml",
]
