import json

import pytest
import yaml

from gedi_core.cli import build_parser, main, resolve_train_config
from gedi_core.config import TrainConfig, build_config
from gedi_core.errors import GediError


def cfg_from(argv):
    return resolve_train_config(build_parser().parse_args(["train", *argv]))


def test_flags_override_config_file_which_overrides_method_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"lr": 0.01, "iters": 50, "sgld": {"steps": 3}, "weights": {"inv": 7}}))
    cfg = cfg_from(["--config", str(path), "--method", "jem", "--lr", "0.5", "--set", "sgld.noise=0.2"])
    assert cfg.lr == 0.5  # flag beats file
    assert cfg.iters == 50  # file beats default
    assert cfg.sgld.steps == 3  # file beats JEM's default of 10
    assert cfg.sgld.noise == 0.2
    assert cfg_from(["--method", "jem"]).sgld.steps == 10  # method default beats dataclass default


def test_one_nested_flag_keeps_the_other_factory_defaults_of_its_section():
    """Setting ``model.tau`` alone must not reset the section to ``ModelConfig()`` (a bug once:
    ``gedi-nesy --tau 0.3`` fell back to 2 clusters and ``--sgld-steps 5`` to a step size of 5e-5)."""
    from gedi_nesy.config import NesyConfig

    cfg = build_config(NesyConfig, [("flags", {"model": {"tau": 0.3}, "sgld": {"steps": 5}})])
    default = NesyConfig()
    assert cfg.model.tau == 0.3 and cfg.sgld.steps == 5
    assert cfg.model.num_clusters == default.model.num_clusters == 10
    assert cfg.model.backbone == "lenet"
    assert cfg.sgld.step_size == default.sgld.step_size == 1.0
    assert cfg.sgld.init_low == -1.0


def test_unknown_config_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sgld:\n  stepz: 3\n")
    with pytest.raises(GediError, match=r"bad.yaml: unknown config key 'sgld.stepz'"):
        cfg_from(["--config", str(path)])


def test_bad_values_rejected():
    with pytest.raises(GediError, match="weights.inv must be >= 0"):
        cfg_from(["--w-inv", "-1"])
    with pytest.raises(GediError, match="unknown method 'simclr'"):
        cfg_from(["--method", "simclr"])
    with pytest.raises(GediError, match="'iters' expects int"):
        build_config(TrainConfig, [("x", {"iters": "many"})])


def test_ablation_refuses_weight_on_removed_term(capsys):
    assert main(["train", "--method", "gedi_no_gen", "--w-gen", "1", "--iters", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no 'gen' term" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--method", "nope"], "unknown method 'nope'"),
        (["--w-prior", "-2"], "weights.prior must be >= 0"),
        (["--config", "/nonexistent.yaml"], "config file not found"),
        (["--set", "model.depthh=3"], "unknown config key 'model.depthh'"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(capsys, argv, message):
    assert main(["train", "--iters", "2", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0 and "Traceback" not in err


@pytest.mark.slow
def test_cli_train_writes_run_folder_and_prints_json_last(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "circles", "--method", "gedi", "--iters", "60", "--log-every", "20",
                 "--ckpt-every", "30", "--n-train", "400", "--batch-size", "100", "--out", str(out), "--no-progress"])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    metrics = json.loads(last)
    assert {"nmi", "acc", "ari", "seconds"} <= set(metrics)
    for name in ("metrics.json", "log.csv", "config.yaml", "checkpoint.pt", "losses.png", "clusters.png", "density.png"):
        assert (out / name).exists(), name
    assert len((out / "log.csv").read_text().strip().splitlines()) == 1 + 3


def test_flag_tables_come_from_the_config_declarations():
    """Each flag sets a key its config has; a section's flags read as the including config says."""
    from gedi_core.cli import TRAIN_FLAGS
    from gedi_core.config import flags_of, to_dict
    from gedi_nesy.cli import NESY_FLAGS
    from gedi_nesy.config import NesyConfig

    for table, cfg in ((TRAIN_FLAGS, TrainConfig()), (NESY_FLAGS, NesyConfig())):
        names = [f.flag for f in table]
        assert len(names) == len(set(names))
        keys = set(flatten(to_dict(cfg)))
        assert all(f.key in keys for f in table), [f.key for f in table if f.key not in keys]
    core, nesy = ({f.flag: f for f in t} for t in (TRAIN_FLAGS, NESY_FLAGS))
    assert core["--sgld-steps"].help == "SGLD steps per iteration" and nesy["--sgld-steps"].help == "SGLD steps per batch"
    assert "--width" in core and "--width" not in nesy  # hidden by NesyConfig's model section
    assert (core["--w-gen"].key, nesy["--w-nesy"].key, nesy["--amp"].type) == ("weights.gen", "weights.nesy", bool)
    assert flags_of(NesyConfig) == NESY_FLAGS


def flatten(d, prefix=""):
    out = {}
    for key, value in d.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def test_a_declared_field_gets_its_flag_range_and_choice_check():
    """A new field is one line: its flag, range and choices follow from it."""
    from dataclasses import dataclass

    from gedi_core.config import POSITIVE, check_choices, flags_of, ranges_of, section, setting

    @dataclass
    class Inner:
        steps: int = setting(1, "--steps", "steps", range=POSITIVE)
        size: int = setting(3, "--size", "size")

    @dataclass
    class Outer:
        mode: str = setting("a", "--mode", "a | b", choices=("a", "b"), kind="mode")
        quiet: bool = setting(False, "--quiet", "say less")
        inner: Inner = section(Inner, help={"steps": "inner steps"}, hide=("size",))

    assert [(f.flag, f.key, f.type, f.help) for f in flags_of(Outer)] == [
        ("--mode", "mode", str, "a | b"), ("--quiet", "quiet", bool, "say less"), ("--steps", "inner.steps", int,
                                                                                   "inner steps")]
    assert ranges_of(Outer) == {"inner.steps": POSITIVE}
    check_choices(Outer())
    with pytest.raises(GediError, match=r"^mode: unknown mode 'c' \(known: a, b\)$"):
        check_choices(Outer(mode="c"))


def test_nesy_validate_changes_nothing_and_images_mean_npz():
    import copy

    from gedi_nesy.config import NesyConfig, NesyDataConfig, build_nesy_config

    cfg = NesyConfig()
    before = copy.deepcopy(cfg)
    assert cfg.validate() == before == cfg
    assert NesyDataConfig(images="x.npz").name == "npz"  # normalised where the config is built
    built = build_nesy_config([("file", {"data": {"name": "mnist"}}), ("flags", {"data": {"images": __file__}})])
    assert (built.data.name, built.data.images) == ("npz", __file__)
