import pytest

from anysr_plugin import AnySRConfig
from anysr_plugin.blocks import AnySRRDB
from anysr_plugin.config import channels_at
from anysr_plugin.errors import AnySRError, ConfigError, WidthError


def test_paper_defaults():
    cfg = AnySRConfig()
    assert cfg.widths == (0.5, 0.7, 0.9, 1.0)
    assert cfg.scale_bounds == (1.75, 2.55, 3.25)
    assert cfg.reset_prob == 0.6 and cfg.gate == "identity" and cfg.interweave == "interleave"
    assert cfg.lam_for("edsr") == 4 and cfg.lam_for("rcab") == 4 and cfg.lam_for("rdb") == 8
    assert cfg.lam_for(AnySRRDB) == 8 and cfg.lam_for("rrdb") == 4
    assert AnySRConfig(lam=6).lam_for("rdb") == 6


@pytest.mark.parametrize("scale,width", [(1.1, 0.5), (1.7, 0.5), (1.75, 0.5), (1.76, 0.7), (2.05, 0.7),
                                         (2.5, 0.7), (2.6, 0.9), (3.2, 0.9), (3.25, 0.9), (3.3, 1.0),
                                         (4.0, 1.0), (6.0, 1.0), (30.0, 1.0), (0.5, 0.5)])
def test_width_for_scale_uses_continuous_bounds(scale, width):
    assert AnySRConfig().width_for_scale(scale) == width


def test_channels_at_floors_like_the_paper():
    assert [channels_at(64, w) for w in (0.5, 0.7, 0.9, 1.0)] == [32, 44, 57, 64]
    assert channels_at(70, 0.9) == 63  # 0.9 * 70 = 62.99999... in floating point


def test_dict_and_yaml_round_trip(tmp_path):
    cfg = AnySRConfig(widths=(0.25, 0.5, 1.0), scale_bounds=(2.0, 3.0), lam=8, reset_prob=0.2, gate="paper",
                      interweave="concat", seed=7)
    assert AnySRConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "anysr.yaml"
    cfg.to_yaml(path)
    assert AnySRConfig.from_yaml(path) == cfg
    assert AnySRConfig.from_yaml(cfg.to_yaml()) == cfg
    # an upstream spec fragment with an `anysr:` entry reads too
    assert AnySRConfig.from_yaml("anysr:\n  reset_prob: 0.4\n").reset_prob == 0.4


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match="reset_probability"):
        AnySRConfig.from_dict({"reset_probability": 0.5})


@pytest.mark.parametrize("field,value,why", [
    ("widths", (0.7, 0.5, 1.0), "ascending"),
    ("widths", (0.5, 0.9), "last width must be 1.0"),
    ("widths", (0.0, 1.0), r"\(0, 1\]"),
    ("widths", (0.5, 1.5), r"\(0, 1\]"),
    ("widths", "0.5,1", "list of numbers"),
    ("scale_bounds", (1.75, 2.55), "exactly len"),
    ("scale_bounds", (2.55, 1.75, 3.25), "ascending"),
    ("lam", 0, "positive integer"),
    ("lam", 2.5, "positive integer"),
    ("reset_prob", 1.5, r"\[0, 1\]"),
    ("reset_prob", "0.6", "number"),
    ("gate", "sigmoid", "identity"),
    ("interweave", "interleaved", "interleave"),
    ("rdb_gate", "middle", "first"),
    ("fallback_scale", -1.0, "positive"),
    ("compat", "release", "official"),
])
def test_bad_values_raise_config_error_naming_the_field(field, value, why):
    with pytest.raises(ConfigError, match=rf"AnySRConfig\.{field}=.*{why}"):
        AnySRConfig(**{field: value})


def test_config_error_is_an_anysr_error_and_a_value_error():
    with pytest.raises(AnySRError):
        AnySRConfig(reset_prob=2)
    with pytest.raises(ValueError):
        AnySRConfig(reset_prob=2)


def test_check_width():
    cfg = AnySRConfig()
    assert cfg.check_width(0.7) == 0.7
    with pytest.raises(WidthError, match="0.6"):
        cfg.check_width(0.6)


def test_invalid_yaml_is_a_config_error():
    with pytest.raises(ConfigError):
        AnySRConfig.from_yaml("widths: [0.5, 1.0\n")


def test_from_yaml_text_with_long_path_like_lines():
    text = "anysr:\n  seed: 3\nanysr_init_from: /" + "x" * 300 + "/epoch-last.pth\n"
    assert AnySRConfig.from_yaml(text).seed == 3
