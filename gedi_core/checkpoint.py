"""The checkpoint's layout, known here alone: what :func:`gedi_core.loop.fit` writes and every
reader (``--resume``, ``eval``, ``predict``, ``export``, the experiments) reads back.

A training checkpoint (``checkpoint.pt`` of a run folder) is one dict::

    {"step":      {"model": <state shared by all ranks>, "local": <this rank's state>},
     "optimizer": <optimizer.state_dict()>,
     "batches":   <the batch source's state>,
     "rng":       <the random generators' state>,
     "loop":      {<LOOP_KEYS>, "world_size"},
     "config":    <the run's resolved config>, "inputs": <digests of its input files>,
     "layout":    LAYOUT, "version": <the project version that wrote it>}

What ``step.model`` and ``step.local`` hold is the step's own business (its ``state_dict``).
Ranks other than 0 write ``{"step": {"local": ...}, "rng": ...}`` to a file of their own.

Layout versions: ``LAYOUT`` (2) is the current one and is stored under ``"layout"``. A file
without that key is layout 1 (written before the key existed); it is read as the current layout
when it holds every key of it, and otherwise refused in one line naming the layout found, what
it lacks and the layout expected (so is a file of a newer layout), never with a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from gedi_core import __version__
from gedi_core.errors import GediError

#: the version of the checkpoint's layout written now (a file without a ``layout`` key: 1)
LAYOUT = 2
#: the sections of a rank-0 training checkpoint
SECTIONS = ("step", "optimizer", "batches", "rng", "loop")
#: keys of the ``loop`` section that resuming reads
LOOP_KEYS = ("epoch", "pos", "steps", "items", "seconds", "epoch_acc", "rows", "epoch_rows", "warnings",
             "monitor_seen")
#: every key a checkpoint of the current layout holds, dotted (what ``--resume`` needs)
REQUIRED = SECTIONS + tuple(f"loop.{k}" for k in LOOP_KEYS)
#: the key under which ``torch.nn.Module.state_dict`` keeps what ``get_extra_state`` returned
EXTRA_STATE_KEY = "_extra_state"


# ----------------------------------------------------------------------------- files
def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's dict; a missing, empty, truncated or foreign file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise GediError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GediError(f"{path}: cannot read the checkpoint (empty, truncated or not a checkpoint: {reason})") from None
    if not isinstance(state, dict):
        raise GediError(f"{path}: not a checkpoint of this project (holds a {type(state).__name__})")
    return state


def read_checkpoint(path: str | Path, need: Sequence[str] = ("step.model",)) -> dict[str, Any]:
    """A training checkpoint to use (not resume): loaded, and refused in one line if its layout is
    newer or it lacks one of the dotted keys ``need``."""
    state = load_checkpoint(path)
    check_layout(state, path, need, action="reads")
    return state


# ----------------------------------------------------------------------------- layout versions
def layout_of(state: Mapping[str, Any]) -> int:
    """The layout version a checkpoint says it has (1: none stored)."""
    return state.get("layout", 1)


def _has(state: Mapping[str, Any], dotted: str) -> bool:
    node: Any = state
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def check_layout(state: Mapping[str, Any], path: str | Path, need: Sequence[str] = REQUIRED,
                 action: str = "resumes") -> None:
    """A checkpoint of a newer layout, or one lacking a dotted key of ``need``, is one line naming
    the layout found, what it lacks and the layout this version ``action`` (resumes, reads).
    A dict that is no training checkpoint at all (neither ``step`` nor ``loop``) is let through."""
    if "loop" not in state and "step" not in state:
        return  # not a training checkpoint of the loop (e.g. a test's state): nothing to check
    layout = layout_of(state)
    missing = [k for k in need if not _has(state, k)]
    if missing or layout > LAYOUT:
        which = "a newer" if layout > LAYOUT else "an older"
        lacks = f"; it lacks {', '.join(missing)}" if missing else ""
        version = f"gedi {state['version']}, " if "version" in state else ""
        fresh = ": choose a fresh --out" if action == "resumes" else ""
        raise GediError(f"{path}: written by {which} version of this project ({version}checkpoint "
                        f"layout {layout}{lacks}); this version ({__version__}) {action} layout {LAYOUT}{fresh}")


# ----------------------------------------------------------------------------- writing
def loop_section(world_size: int, epoch: int, pos: int, steps: int, items: int, seconds: float,
                 epoch_acc: dict[str, Any] | None, rows: list, epoch_rows: list, warnings: list,
                 monitor_seen: list[str]) -> dict[str, Any]:
    """The ``loop`` section: where the loop stands (``epoch``, ``pos`` inside it), its counters,
    the running sums of the epoch under way and the log so far."""
    return {"world_size": world_size, "epoch": epoch, "pos": pos, "steps": steps, "items": items,
            "seconds": seconds, "epoch_acc": epoch_acc, "rows": rows, "epoch_rows": epoch_rows,
            "warnings": warnings, "monitor_seen": monitor_seen}


def training_state(step: dict[str, Any], optimizer: dict[str, Any], batches: dict[str, Any], rng: dict[str, Any],
                   loop: dict[str, Any]) -> dict[str, Any]:
    """Rank 0's checkpoint (before :func:`stamp`): the step's state, the optimizer's, the batch
    source's, the random state and the loop section."""
    return {"step": step, "rng": rng, "optimizer": optimizer, "batches": batches, "loop": loop}


def rank_state(step: dict[str, Any], rng: dict[str, Any]) -> dict[str, Any]:
    """What a rank keeps of its own: the step's ``local`` state and its random state."""
    return {"step": {"local": step["local"]}, "rng": rng}


def stamp(state: dict[str, Any], config: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Rank 0's checkpoint as written: ``state`` with the run's config, the layout version, the
    project version and the digests of the input files."""
    return {**state, "config": config, "layout": LAYOUT, "version": __version__, "inputs": inputs}


def merge_rank(state: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Rank 0's checkpoint with a rank's own file (its random state and local step state) over it."""
    return {**state, **own, "step": {**state.get("step", {}), **own.get("step", {})}}


# ----------------------------------------------------------------------------- reading
def step_state(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The step's state: ``{"model": ..., "local": ...}``."""
    return ckpt["step"]


def model_state(ckpt: Mapping[str, Any]) -> Any:
    """The shared (model) part of the step's state."""
    return ckpt["step"]["model"]


def local_state(ckpt: Mapping[str, Any]) -> Any:
    """This rank's part of the step's state (replay buffers, generators)."""
    return ckpt["step"]["local"]


def optimizer_state(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    return ckpt["optimizer"]


def batches_state(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    return ckpt["batches"]


def random_state(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    return ckpt["rng"]


def loop_state(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The loop section (see :func:`loop_section`)."""
    return ckpt["loop"]


def config_of(ckpt: Mapping[str, Any]) -> Any:
    """The run's config as the checkpoint keeps it (None if it has none)."""
    return ckpt.get("config")


def inputs_of(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The digests of the run's input files the checkpoint recorded (empty if none)."""
    return ckpt.get("inputs") or {}


def extra_state(module_state: Mapping[str, Any]) -> dict[str, Any]:
    """What a module's ``get_extra_state`` returned, from its saved ``state_dict`` (empty if none)."""
    return module_state.get(EXTRA_STATE_KEY, {})
