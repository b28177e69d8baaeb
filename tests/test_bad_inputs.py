"""The catalogue of bad inputs: each one, run through a CLI's ``main(argv)``, ends with exit
status 2 and one line on stderr naming the problem, with no traceback and no run folder.

One row per case: (id, cli, argv, files to create, expected fragment of the line).  ``{tmp}``
in argv and fragments is the case's temporary folder.  docs/errors.md lists the same cases.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from gedi_core import cli as core_cli
from gedi_nesy import cli as nesy_cli

CORE = ["train", "--iters", "2", "--no-progress"]
NESY = ["train", "--examples", "4", "--test-examples", "2", "--epochs", "1", "--batch-size", "2",
        "--sgld-steps", "1", "--no-progress"]
SUM_PL = Path(__file__).resolve().parents[1] / "programs" / "sum.pl"

Writer = Callable[[Path], None]


# ----------------------------------------------------------------------------- file makers
def text(content: str) -> Writer:
    return lambda path: path.write_text(content)


def raw(content: bytes) -> Writer:
    return lambda path: path.write_bytes(content)


def npz(**arrays) -> Writer:
    def write(path: Path) -> None:
        g = np.random.default_rng(0)
        base = {"train_images": g.integers(0, 255, (20, 28, 28), dtype=np.uint8),
                "test_images": g.integers(0, 255, (10, 28, 28), dtype=np.uint8),
                "train_labels": np.arange(20) % 10, "test_labels": np.arange(10)}
        base.update(arrays)
        buf = io.BytesIO()
        np.savez(buf, **{k: v for k, v in base.items() if v is not None})
        path.write_bytes(buf.getvalue())

    return write


def truncated_npz(path: Path) -> None:
    npz()(path)
    path.write_bytes(path.read_bytes()[:3000])


def corrupt_npz(path: Path) -> None:
    npz()(path)
    data = bytearray(path.read_bytes())
    data[1000:1100] = bytes(100)  # inside train_images: its CRC no longer matches
    path.write_bytes(bytes(data))


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.astype(np.uint8).tobytes()


def mnist_files(damage: str = "", folder: str = "MNIST", labels: int = 10) -> Writer:
    """A data root with ``folder/raw/{train,t10k}-{images,labels}`` (gzipped); ``damage``: which
    file to break (``corrupt-gz``: not gzip data, ``truncated``: IDX content cut short)."""

    def write(root: Path) -> None:
        raw_dir = root / folder / "raw"
        raw_dir.mkdir(parents=True)
        g = np.random.default_rng(0)
        for prefix, n in (("train", 30), ("t10k", 20)):
            for kind, arr in (("images-idx3", g.integers(0, 255, (n, 28, 28))), ("labels-idx1", np.arange(n) % labels)):
                data = idx_bytes(arr)
                name = f"{prefix}-{kind}-ubyte.gz"
                if damage == "corrupt-gz" and name.startswith("train-images"):
                    (raw_dir / name).write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(200)))
                    continue
                if damage == "truncated" and name.startswith("t10k-images"):
                    data = data[: len(data) // 2]
                (raw_dir / name).write_bytes(gzip.compress(data))

    return write


# ----------------------------------------------------------------------------- the catalogue
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def case(case_id: str, which: str, argv: list[str], files: dict[str, Writer], expected: str, marks=()):
    return pytest.param(case_id, which, argv, files, expected, id=case_id, marks=marks)


CASES = [
    # --- gedi-core: numbers
    case("core-w-inv-nan", "core", ["--w-inv", "nan"], {}, "'weights.inv' must be a finite number, got nan"),
    case("core-tau-nan", "core", ["--tau", "nan"], {}, "'model.tau' must be a finite number, got nan"),
    case("core-w-prior-inf", "core", ["--w-prior", "inf"], {}, "'weights.prior' must be a finite number, got inf"),
    case("core-lr-nan", "core", ["--lr", "nan"], {}, "'lr' must be a finite number, got nan"),
    case("core-lr-huge", "core", ["--lr", "1e30"], {}, "lr must lie in (0, 1], got 1e+30"),
    case("core-sgld-noise-overflow", "core", ["--sgld-noise", "1e39"], {}, "'sgld.noise' must be a finite number"),
    case("core-set-iters-inf", "core", ["--set", "iters=.inf"], {}, "'iters' must be a finite number, got inf"),
    case("core-set-iters-bool", "core", ["--set", "iters=true"], {}, "'iters' expects int, got True"),
    case("core-set-unparsable", "core", ["--set", "lr=[0.1"], {}, "--set lr=[0.1: cannot parse the value"),
    case("core-one-cluster", "core", ["--num-clusters", "1"], {}, "model.num_clusters must be >= 2, got 1"),
    case("core-zero-batch", "core", ["--batch-size", "0"], {}, "batch_size must be > 0, got 0"),
    case("core-negative-seed", "core", ["--seed", "-1"], {}, "seed must lie in [0, 4294967295], got -1"),
    case("core-reinit-freq", "core", ["--reinit-freq", "1.5"], {}, "sgld.reinit_freq must lie in [0, 1], got 1.5"),
    case("core-jitter-p", "core", ["--set", "data.jitter_p=-0.1"], {}, "data.jitter_p must lie in [0, 1], got -0.1"),
    case("core-sgld-init", "core", ["--set", "sgld.init_low=5"], {}, "sgld.init_low (5.0) must be below sgld.init_high"),
    case("core-validation-one", "core", ["--validation", "1"], {}, "data.validation must lie in [0, 1), got 1.0"),
    case("core-sgld-chains", "core", ["--sgld-chains", "-1"], {}, "sgld.chains must be >= 0, got -1"),
    case("core-sgld-every", "core", ["--sgld-every", "0"], {}, "sgld.every must be > 0, got 0"),
    case("core-sgld-every-nan", "core", ["--set", "sgld.every=.nan"], {}, "'sgld.every' must be a finite number, got nan"),
    # --- gedi-core: config files
    case("core-config-binary", "core", ["--config", "{tmp}/c.yaml"], {"c.yaml": raw(b"lr: \xff\xfe\x00\x01")},
     "{tmp}/c.yaml: not a text file (byte 0xff at offset 4"),
    case("core-config-yaml", "core", ["--config", "{tmp}/c.yaml"], {"c.yaml": text("lr: 0.1\nsgld:\n  steps: 5\n   noise: 1\n")},
     "{tmp}/c.yaml:4: cannot parse YAML: mapping values are not allowed here"),
    case("core-config-json", "core", ["--config", "{tmp}/c.json"], {"c.json": text('{"lr": 0.1,\n "iters": }\n')},
     "{tmp}/c.json:2: cannot parse JSON: Expecting value"),
    case("core-config-null", "core", ["--config", "{tmp}/c.yaml"], {"c.yaml": text("lr:\n")},
     "{tmp}/c.yaml: 'lr' expects float, got nothing (null)"),
    case("core-config-list", "core", ["--config", "{tmp}/c.yaml"], {"c.yaml": text("- lr: 0.1\n")},
     "{tmp}/c.yaml: top level must be a mapping of config keys, got list"),
    # --- gedi-core: data files and device
    case("core-mnist-corrupt-gz", "core", ["--dataset", "mnist", "--data-root", "{tmp}/d", "--epochs", "1"],
     {"d": mnist_files("corrupt-gz")}, "train-images-idx3-ubyte.gz: damaged or truncated IDX file"),
    case("core-t10k-truncated", "core", ["--dataset", "mnist-t10k", "--data-root", "{tmp}/d", "--epochs", "1"],
     {"d": mnist_files("truncated")}, "t10k-images-idx3-ubyte.gz: damaged or truncated IDX file"),
    case("core-fashion-labels", "core", ["--dataset", "fashion-mnist", "--data-root", "{tmp}/d", "--epochs", "1"],
     {"d": mnist_files(folder="FashionMNIST", labels=13)}, "train labels must lie in 0..9, found 0..12"),
    case("core-device-cuda", "core", ["--device", "cuda"], {}, "device 'cuda': CUDA is not available here",
                 marks=NO_CUDA),
    case("core-device-unknown", "core", ["--device", "tpu0"], {}, "device 'tpu0': not a torch device"),
    # --- gedi-nesy: numbers
    case("nesy-w-inv-nan", "nesy", ["--w-inv", "nan"], {}, "'weights.inv' must be a finite number, got nan"),
    case("nesy-tau-nan", "nesy", ["--tau", "nan"], {}, "'model.tau' must be a finite number, got nan"),
    case("nesy-w-prior-inf", "nesy", ["--w-prior", "inf"], {}, "'weights.prior' must be a finite number, got inf"),
    case("nesy-prior-target", "nesy", ["--prior-target", "counted"], {},
         "prior_target: unknown prior target 'counted' (known: uniform, program)"),
    case("nesy-lr-nan", "nesy", ["--lr", "nan"], {}, "'lr' must be a finite number, got nan"),
    case("nesy-restarts-negative", "nesy", ["--restarts", "-1"], {}, "restarts must be >= 0, got -1"),
    case("nesy-restart-plateau-negative", "nesy", ["--restart-plateau", "-5"], {}, "restart_plateau must be >= 0, got -5"),
    case("nesy-plateau-cuts-negative", "nesy", ["--plateau-cuts", "-1"], {}, "plateau_cuts must be >= 0, got -1"),
    case("nesy-restart-agree-over-one", "nesy", ["--restart-agree", "1.5"], {}, "restart_agree must lie in [0, 1], got 1.5"),
    case("nesy-restart-quorum-one", "nesy", ["--restart-quorum", "1"], {}, "restart_quorum must be >= 2, got 1"),
    case("nesy-rename-queries-zero", "nesy", ["--rename-queries", "0"], {}, "rename_queries must be > 0, got 0"),
    case("nesy-lr-huge", "nesy", ["--lr", "1e30"], {}, "lr must lie in (0, 1], got 1e+30"),
    case("nesy-set-epochs-inf", "nesy", ["--set", "epochs=.inf"], {}, "'epochs' must be a finite number, got inf"),
    case("nesy-one-cluster", "nesy", ["--num-clusters", "1"], {}, "model.num_clusters must be >= 2, got 1"),
    case("nesy-test-fraction", "nesy", ["--set", "data.test_fraction=1.5"], {}, "data.test_fraction must lie in (0, 1)"),
    case("nesy-reinit-freq", "nesy", ["--reinit-freq", "-0.1"], {}, "sgld.reinit_freq must lie in [0, 1], got -0.1"),
    case("nesy-sgld-chains", "nesy", ["--sgld-chains", "-60"], {}, "sgld.chains must be >= 0, got -60"),
    case("nesy-sgld-every", "nesy", ["--sgld-every", "-2"], {}, "sgld.every must be > 0, got -2"),
    case("nesy-sgld-chains-nan", "nesy", ["--set", "sgld.chains=.nan"], {}, "'sgld.chains' must be a finite number, got nan"),
    case("nesy-zero-batch", "nesy", ["--batch-size", "0"], {}, "batch_size must be > 0, got 0"),
    case("nesy-nothing-trains", "nesy", ["--arm", "nesy", "--w-nesy", "0"], {}, "arm 'nesy': every weight it uses is 0"),
    case("nesy-train-shift", "nesy", ["--train-shift", "28"], {}, "data.train_shift must be below the image size 28"),
    case("nesy-validation-one", "nesy", ["--validation", "1"], {}, "data.validation must lie in [0, 1), got 1.0"),
    case("nesy-validation-queries", "nesy", ["--validation", "0.1", "--program", str(SUM_PL), "--queries", "{tmp}/q.txt"],
     {"q.txt": text("sum(tensor(train(0)), tensor(train(1)), 3).\n")},
     "data.validation: cannot be combined with --queries"),
    # --- gedi-nesy: query files
    case("nesy-query-negative-p", "nesy", ["--program", str(SUM_PL), "--queries", "{tmp}/q.txt"],
     {"q.txt": text("sum(tensor(train(0)), tensor(train(1)), 3).\n-0.5::sum(tensor(train(2)), tensor(train(3)), 4).\n")},
     "{tmp}/q.txt:2: the probability of a query must lie in [0, 1], got -0.5"),
    case("nesy-query-p-above-1", "nesy", ["--program", str(SUM_PL), "--queries", "{tmp}/q.txt"],
     {"q.txt": text("% comment\n\n2::sum(tensor(train(0)), tensor(train(1)), 3).\n")},
     "{tmp}/q.txt:3: the probability of a query must lie in [0, 1], got 2"),
    case("nesy-query-binary", "nesy", ["--program", str(SUM_PL), "--queries", "{tmp}/q.txt"],
     {"q.txt": raw(b"sum(\x89PNG\r\n\x1a\n")}, "{tmp}/q.txt: not a text file (byte 0x89 at offset 4"),
    case("nesy-test-queries-missing", "nesy", ["--test-queries", "{tmp}/none.txt"], {}, "--test-queries {tmp}/none.txt: no such file"),
    case("nesy-query-label-outside", "nesy", ["--program", str(SUM_PL), "--queries", "{tmp}/q.txt"],
                 {"q.txt": text("sum(tensor(train(0)), tensor(train(1)), 3).\nsum(tensor(train(2)), tensor(train(3)), 25).\n")},
                 "{tmp}/q.txt:2: the program cannot prove"),
    # --- gedi-nesy: program and config files
    case("nesy-program-binary", "nesy", ["--program", "{tmp}/p.pl"], {"p.pl": raw(b"nn(\xc3\x28net")},
     "{tmp}/p.pl: not a text file (byte 0xc3 at offset 3"),
    case("nesy-config-binary", "nesy", ["--config", "{tmp}/c.yaml"], {"c.yaml": raw(bytes(range(128, 256)))},
     "{tmp}/c.yaml: not a text file (byte 0x80 at offset 0"),
    case("nesy-config-yaml", "nesy", ["--config", "{tmp}/c.yaml"], {"c.yaml": text("weights:\n  gen: 0.1\n  prior: [1, 2\n")},
     "{tmp}/c.yaml:4: cannot parse YAML: expected ',' or ']', but got '<stream end>' (column 1), "
     "while parsing a flow sequence begun on line 3"),
    # --- gedi-nesy: images
    case("nesy-npz-truncated", "nesy", ["--images", "{tmp}/i.npz"], {"i.npz": truncated_npz},
         "--images {tmp}/i.npz: cannot read .npz: damaged, truncated or not an .npz archive"),
    case("nesy-npz-corrupt", "nesy", ["--images", "{tmp}/i.npz"], {"i.npz": corrupt_npz},
         "{tmp}/i.npz: array 'train_images' is damaged or truncated (Bad CRC-32"),
    case("nesy-npz-object", "nesy", ["--images", "{tmp}/i.npz"], {"i.npz": npz(test_labels=np.array([1, "a", None] * 3 + [0], dtype=object))},
     "{tmp}/i.npz: array 'test_labels' holds Python objects"),
    case("nesy-npz-shape", "nesy", ["--images", "{tmp}/i.npz"], {"i.npz": npz(train_images=np.zeros((4, 3, 28, 28), np.uint8))},
     "{tmp}/i.npz: 'train_images' must have shape (N, 1, H, W) or (N, H, W), got (4, 3, 28, 28)"),
    case("nesy-npz-nan", "nesy", ["--images", "{tmp}/i.npz"], {"i.npz": npz(test_images=np.full((10, 28, 28), np.nan, np.float32))},
     "{tmp}/i.npz: 'test_images' holds 7840 NaN/inf pixel(s), the first in image 0"),
    case("nesy-npz-negative-pixels", "nesy", ["--images", "{tmp}/i.npz"], {"i.npz": npz(test_images=-np.ones((10, 28, 28)))},
     "{tmp}/i.npz: 'test_images' pixels must lie in [0, 255] (integers) or [0, 1] (floats), found -1..-1"),
    case("nesy-npz-labels-100", "nesy", ["--images", "{tmp}/i.npz"], {"i.npz": npz(train_labels=np.arange(20) % 10 + 100)},
     "{tmp}/i.npz: 'train_labels': labels must be digits 0..9, found 100 at index 0"),
    case("nesy-npz-labels-float", "nesy", ["--images", "{tmp}/i.npz"], {"i.npz": npz(test_labels=np.arange(10) / 2)},
     "{tmp}/i.npz: 'test_labels' must hold integer labels, found 0.5 at index 1"),
    case("nesy-npz-count", "nesy", ["--images", "{tmp}/i.npz"], {"i.npz": npz(test_labels=np.arange(9))},
     "{tmp}/i.npz: test_labels has 9 entries for 10 test_images"),
    case("nesy-npy-not-npz", "nesy", ["--images", "{tmp}/i.npz"], {"i.npz": lambda p: np.save(open(p, "wb"), np.zeros(3))},
     "{tmp}/i.npz: one .npy array; expected an .npz archive"),
    # --- gedi-nesy: the pixel rule (floats in [0, 1], integers in [0, 255] by their dtype; never clamped)
    case("nesy-npz-float-above-1", "nesy", ["--images", "{tmp}/i.npz"],
         {"i.npz": npz(train_images=np.full((20, 28, 28), 1.2, np.float32))},
         "{tmp}/i.npz: 'train_images' pixels must lie in [0, 255] (integers) or [0, 1] (floats), found 1.2..1.2 "
         "(float32: float pixels must lie in [0, 1]"),
    case("nesy-npz-float-255", "nesy", ["--images", "{tmp}/i.npz"],
         {"i.npz": npz(test_images=np.random.default_rng(0).integers(0, 256, (10, 28, 28)).astype(np.float64))},
         "{tmp}/i.npz: 'test_images' pixels must lie in [0, 255] (integers) or [0, 1] (floats), found 0..255 (float64"),
    case("nesy-npz-int16-above-255", "nesy", ["--images", "{tmp}/i.npz"],
         {"i.npz": npz(train_images=np.full((20, 28, 28), 300, np.int16))},
         "found 300..300 (int16: integer pixels must lie in [0, 255]"),
    # --- gedi-nesy: inputs whose meaning the run would not honour
    case("nesy-query-test-pool", "nesy", ["--program", str(SUM_PL), "--queries", "{tmp}/q.txt"],
         {"q.txt": text("sum(tensor(train(0)), tensor(train(1)), 3).\nsum(tensor(test(0)), tensor(train(2)), 4).\n")},
         "{tmp}/q.txt:2: training query uses tensor(test(0)), an image of the test pool"),
    case("nesy-program-evidence", "nesy", ["--program", "{tmp}/sum.pl"],
         {"sum.pl": text(SUM_PL.read_text() + "evidence(digit(tensor(train(0)), 3)).\n")},
         "{tmp}/sum.pl:7: evidence(...) is not supported"),
    case("nesy-compile-cache-file", "nesy", ["--compile-cache", "{tmp}/c"], {"c": text("a file")},
         "--compile-cache {tmp}/c: exists and is not a folder"),
    case("nesy-mnist-corrupt-gz", "nesy", ["--data", "mnist", "--data-root", "{tmp}/d"], {"d": mnist_files("corrupt-gz")},
     "train-images-idx3-ubyte.gz: damaged or truncated IDX file"),
    case("nesy-device-cuda", "nesy", ["--device", "cuda"], {}, "device 'cuda': CUDA is not available here",
                 marks=NO_CUDA),
]


@pytest.mark.parametrize("case_id, which, argv, files, expected", CASES)
def test_bad_input_is_one_line_exit_2(case_id, which, argv, files, expected, tmp_path, capsys):
    for name, write in files.items():
        write(tmp_path / name)
    out = tmp_path / "run"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base, main, prog = (CORE, core_cli.main, "gedi-core") if which == "core" else (NESY, nesy_cli.main, "gedi-nesy")
    code = main([*base, *argv, "--out", str(out)])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.out + captured.err
    assert code == 2, captured.err
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{prog}: error: ") and expected.replace("{tmp}", str(tmp_path)) in lines[0], lines[0]
    assert not out.exists()  # refused before the run folder was made


def test_catalogue_is_listed_in_docs():
    """docs/errors.md lists every case of this file."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()
    ids = [c.id for c in CASES]
    missing = [i for i in ids if f"`{i}`" not in doc]
    assert not missing, missing


# ----------------------------------------------------------------------------- checks the CLI calls
@pytest.mark.parametrize("engine", ["batched", "exact"])
def test_query_the_program_cannot_prove_names_file_and_line(tmp_path, engine):
    """``read_query_file(..., provable=has_proof(model))``: a label outside what the program can
    produce (the query would be skipped in training) is an error naming file and line."""
    from gedi_core.config import ModelConfig
    from gedi_core.errors import GediError
    from gedi_nesy.data import Pools, has_proof, read_query_file
    from gedi_nesy.network import gedi_network
    from gedi_nesy.program import build_nesy_model, inspect_program

    program = tmp_path / "bits.pl"
    program.write_text("nn(bit_net, [X], Y, [0, 1]) :: bit(X, Y).\ntwo(X, Y, S) :- bit(X, A), bit(Y, B), S is A + B.\n")
    x, y = torch.zeros(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)
    pools = Pools(x, y, x, y, "tiny")
    cfg = ModelConfig(backbone="mlp", hidden=4, feature_dim=2, proj_hidden=2, proj_dim=2, num_clusters=2)
    model = build_nesy_model(program, [gedi_network("bit_net", cfg, (1, 4, 4))], pools, engine=engine)
    good = tmp_path / "good.txt"
    good.write_text("two(tensor(train(0)), tensor(train(1)), 2).\n0.5::two(tensor(train(2)), tensor(train(3)), 0).\n")
    assert len(read_query_file(good, pools.sizes(), inspect_program(program).predicates, has_proof(model))) == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("two(tensor(train(0)), tensor(train(1)), 1).\ntwo(tensor(train(2)), tensor(train(3)), 3).\n")
    with pytest.raises(GediError, match=r"bad.txt:2: the program cannot prove 'two\(.*3\)'"):
        read_query_file(bad, pools.sizes(), inspect_program(program).predicates, has_proof(model))


def test_generated_examples_need_digit_labels():
    from gedi_core.errors import GediError
    from gedi_nesy.data import task_examples

    with pytest.raises(GediError, match=r"sum examples: labels must be digits 0..9, found 12 at index 2"):
        task_examples("sum", torch.tensor([0, 1, 12, 3]), 1, seed=0)


@pytest.mark.parametrize("dtype, unit", [(np.uint8, 1 / 255), (np.int64, 1 / 255), (np.int16, 1 / 255),
                                         (np.bool_, 1.0), (np.float32, 1.0)])
def test_pixels_are_scaled_by_their_dtype_never_by_their_values(tmp_path, dtype, unit):
    """The .npz pixel rule: a pixel of value 1 is 1/255 in any integer dtype, 1 as bool or float
    (images of 0s and 1s are not stretched to the full range by their maximum)."""
    from gedi_nesy.data import npz_image_array

    ones = np.zeros((2, 28, 28))
    ones[:, 10:20, 10:20] = 1
    np.savez(tmp_path / "i.npz", images=ones.astype(dtype))
    x = npz_image_array(tmp_path / "i.npz")
    assert torch.allclose(x.amax(), torch.tensor(2 * unit - 1)) and float(x.amin()) == -1.0
