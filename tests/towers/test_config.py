"""The one override parser: typed `--key=value` args and TOML presets, refused values and keys named."""

from __future__ import annotations

import pytest

from towers.config import ConfigError, model_of, override, parse, parse_cli
from towers.model import TowerConfig
from towers.train import Run, TrainConfig
from towers.train import main as train_main


def test_values_take_their_fields_types_and_land_on_the_config_that_has_the_key():
    tower, train = parse(["--dim=32", "--lr=0.01", "--use_user_id=true", "--loss=sampled"],
                         TowerConfig(), TrainConfig())
    assert (tower.dim, train.lr, tower.use_user_id, train.loss) == (32, 0.01, True, "sampled")
    assert tower.encoder == "transformer" and train.epochs == 1000, "other keys keep their defaults"


def test_a_misspelt_boolean_is_refused_naming_the_key_and_value():
    with pytest.raises(ConfigError, match="use_user_id='ture'"):
        parse(["--use_user_id=ture"], TowerConfig(), TrainConfig())


@pytest.mark.parametrize("arg, key", [("--epochs=many", "epochs"), ("--dim=0", "dim"),
                                      ("--dropout=1.5", "dropout"), ("--encoder=lstm", "encoder"),
                                      ("--protocol=random", "protocol")])
def test_wrong_types_and_out_of_range_values_are_refused_by_key(arg, key):
    with pytest.raises(ConfigError, match=f"^{key}="):
        parse([arg], Run(), TowerConfig(), TrainConfig())


def test_an_unknown_key_is_named_with_the_valid_keys():
    with pytest.raises(ConfigError, match="unknown key 'dimm'; valid keys: .*batch_size.*dim,"):
        parse(["--dimm=3"], TowerConfig(), TrainConfig())
    with pytest.raises(ConfigError, match="expected --key=value"):
        parse(["dim=3"], TowerConfig())


def test_checks_across_fields_are_refused_with_their_message():
    with pytest.raises(ConfigError, match="TowerConfig: heads=3 does not divide dim=64"):
        parse(["--heads=3"], TowerConfig())
    with pytest.raises(ConfigError, match="warmup_epochs=2.0 must be below decay_epochs=1.0"):
        override([TrainConfig()], {"warmup_epochs": 2, "decay_epochs": 1})


def test_a_preset_is_validated_and_the_command_line_overrides_it(tmp_path):
    preset = tmp_path / "preset.toml"
    preset.write_text('encoder = "gru"\ndim = 32\nmax_minutes = 4.0\n')
    run, tower, train = parse([f"--preset={preset}", "--dim=48"], Run(), TowerConfig(),
                              TrainConfig())
    assert (run.preset, tower.encoder, tower.dim, train.max_minutes) == (str(preset), "gru", 48, 4.0)
    preset.write_text("dim = 12.5\n")
    with pytest.raises(ConfigError, match="dim=12.5"):
        parse([f"--preset={preset}"], Run(), TowerConfig())


def test_construction_and_assignment_are_validated_too():
    with pytest.raises(ValueError, match="use_user_id"):
        TowerConfig(use_user_id="ture")
    with pytest.raises(ValueError, match="dimm"):
        TowerConfig(dimm=3)
    tower = TowerConfig()
    with pytest.raises(ValueError, match="max_len"):
        tower.max_len = 0


def test_the_command_line_form_exits_with_the_message():
    with pytest.raises(SystemExit, match="error: use_user_id='ture'"):
        parse_cli(["--use_user_id=ture"], TowerConfig())


def test_a_model_built_from_a_defaults_dict_types_each_key_by_its_default():
    [config] = parse(["--items=5", "--plot=no", "--ef=32"],
                     model_of("Bench", {"items": 100, "plot": True, "ef": "64,128"})())
    assert config.model_dump() == {"items": 5, "plot": False, "ef": "32"}
    with pytest.raises(ConfigError, match="plot='maybe'"):
        parse(["--plot=maybe"], model_of("Bench", {"plot": True})())


def test_a_key_named_like_a_pydantic_method_is_a_field_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = model_of("BenchArgs", {"json": ""})
    [config] = parse_cli(["--json=out.json"], model())
    assert config.json == "out.json"


def test_the_train_command_refuses_bad_arguments_by_name():
    with pytest.raises(SystemExit, match="use_user_id='ture'"):
        train_main(["--use_user_id=ture"])
    with pytest.raises(SystemExit, match="unknown key 'protocl'"):
        train_main(["--protocl=loo"])
