import textwrap

import pytest

from ppfacedet.core import ConfigError, Registry, load_config, read_section


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def cfg_files(tmp_path):
    (tmp_path / "_base_").mkdir()
    write(tmp_path / "_base_" / "a.yml", """
        seed: 1
        epochs: 10
        model:
          backbone: {type: Foo, width: 8}
          head: {type: Bar}
        test: {score_threshold: 0.02, nms_threshold: 0.4}
        """)
    return write(tmp_path / "child.yml", """
        _BASE_: [_base_/a.yml]
        epochs: 20
        model:
          backbone: {width: 16}
        test: {nms_threshold: 0.45}
        """)


def test_base_inheritance_merges_mappings(cfg_files):
    cfg = load_config(cfg_files)
    assert cfg["seed"] == 1 and cfg["epochs"] == 20
    assert cfg["model"]["backbone"] == {"type": "Foo", "width": 16}
    assert cfg["test"] == {"score_threshold": 0.02, "nms_threshold": 0.45}


def test_a_different_type_replaces_the_whole_component(tmp_path, cfg_files):
    child = write(tmp_path / "other.yml", """
        _BASE_: [_base_/a.yml]
        model:
          backbone: {type: Baz}
        """)
    assert load_config(child)["model"]["backbone"] == {"type": "Baz"}


def test_overrides_parse_yaml_values(cfg_files):
    cfg = load_config(cfg_files, ["epochs=3", "test.nms_threshold=0.3", "model.backbone.width=4",
                                  "weights=a/b.pdparams"])
    assert cfg["epochs"] == 3 and cfg["test"]["nms_threshold"] == 0.3
    assert cfg["model"]["backbone"]["width"] == 4 and cfg["weights"] == "a/b.pdparams"
    assert cfg.where("epochs") == "-o epochs=3"


def test_unknown_top_level_key_names_file_line_and_closest(tmp_path):
    path = write(tmp_path / "bad.yml", """
        seed: 1
        epochz: 3
        """)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}:3" in str(e.value) and "epochs" in str(e.value)


def test_unknown_override_key_is_an_error(cfg_files):
    with pytest.raises(ConfigError, match="weights"):
        load_config(cfg_files, ["weight=x.pdparams"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(cfg_files, ["epochs"])


def test_base_cycle_and_missing_file(tmp_path):
    write(tmp_path / "a.yml", "_BASE_: b.yml\n")
    write(tmp_path / "b.yml", "_BASE_: a.yml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yml"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yml"))


def test_registry_builds_and_rejects_unknown_names_and_keys():
    reg = Registry("widget")

    @reg.register
    class Sprocket:
        def __init__(self, teeth=8, pitch=1.0):
            self.teeth, self.pitch = teeth, pitch

    assert reg.build({"type": "Sprocket", "teeth": 12}).teeth == 12
    with pytest.raises(ConfigError, match="did you mean 'Sprocket'"):
        reg.build({"type": "Sprocet"}, "model.widget")
    with pytest.raises(ConfigError, match="did you mean 'teeth'"):
        reg.build({"type": "Sprocket", "teth": 3}, "model.widget")
    with pytest.raises(ConfigError, match="'type'"):
        reg.build({"teeth": 3}, "model.widget")


def test_read_section_fills_defaults_and_rejects_typos(cfg_files):
    cfg = load_config(cfg_files, ["train_loader.batch_size=4"])
    assert read_section(cfg, "train_loader", {"batch_size": 8, "num_workers": 2}) == \
        {"batch_size": 4, "num_workers": 2}
    cfg = load_config(cfg_files, ["train_loader.batchsize=4"])
    with pytest.raises(ConfigError, match="batch_size"):
        read_section(cfg, "train_loader", {"batch_size": 8, "num_workers": 2})
