"""Config loading: defaults, strict keys and types, ranges, safe YAML, overrides and round trips."""

import dataclasses
import json
import pathlib
import textwrap

import pytest
import yaml

from charrnn.config import (Config, DataConfig, ModelConfig, TrainConfig, config_from_dict,
                            config_to_dict, dump_config, load_config)
from charrnn.errors import CharRNNError, UsageError

REPO = pathlib.Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def usage_error(path, overrides=()):
    with pytest.raises(UsageError) as exc_info:
        load_config(path, overrides)
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_defaults_follow_the_schema():
    cfg = load_config(None)
    assert cfg == Config()
    assert (cfg.name, cfg.out_dir) == ("run", "runs")
    assert cfg.data == DataConfig(path="corpora/tinyshakespeare.txt", val_path=None,
                                  val_fraction=0.1, encoding="utf-8", max_vocab=None)
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.model.num_layers) == ("lstm", 128, 2)
    assert (cfg.model.embedding_size, cfg.model.dropout, cfg.model.peephole) == (0, 0.0, False)
    assert cfg.train.optimizer == "adam" and cfg.train.learning_rate == 2e-3
    assert (cfg.train.max_steps, cfg.train.max_epochs, cfg.train.max_time) == (1000, None, None)
    assert cfg.train.dtype == "float32" and cfg.train.seed == 1234


@pytest.mark.parametrize("text", ["", "# only a comment\n", "model:\n", "data: {}\n"])
def test_empty_file_or_sections_mean_defaults(tmp_path, text):
    assert load_config(write(tmp_path, text)) == Config()


def test_values_from_a_file(tmp_path):
    path = write(tmp_path, """
        name: mine
        data:
          path: [a.txt, b.txt]
          max_vocab: 100
        model:
          cell: gru
          hidden_size: 64
        train:
          learning_rate: 0.01
          max_steps: null
          max_epochs: 3
    """)
    cfg = load_config(path)
    assert cfg.name == "mine"
    assert cfg.data.path == ["a.txt", "b.txt"] and cfg.data.max_vocab == 100
    assert cfg.model.cell == "gru" and cfg.model.hidden_size == 64 and cfg.model.num_layers == 2
    assert cfg.train.learning_rate == 0.01
    assert cfg.train.max_steps is None and cfg.train.max_epochs == 3


@pytest.mark.parametrize("text, field, expected", [
    # PyYAML (YAML 1.1) reads exponent notation without a dot as text
    ("train: {learning_rate: 2e-3}", "learning_rate", 0.002),
    ("train: {learning_rate: '1e-4'}", "learning_rate", 1e-4),
    ("train: {learning_rate: 1}", "learning_rate", 1.0),
    ("train: {max_steps: 1e3}", "max_steps", 1000),
    ("train: {max_steps: 2000.0}", "max_steps", 2000),
    ("train: {max_steps: '1.5e3'}", "max_steps", 1500),
    ("train: {max_time: 90}", "max_time", 90.0),
])
def test_numbers_written_as_the_user_meant_them(tmp_path, text, field, expected):
    value = getattr(load_config(write(tmp_path, text)).train, field)
    assert value == expected and type(value) is type(expected)


BAD_VALUES = [
    # (yaml text, key the message must name, a further phrase it must contain)
    ("train: {lerning_rate: 0.1}", "train.lerning_rate", "did you mean 'train.learning_rate'?"),
    ("model: {hiden_size: 8}", "model.hiden_size", "did you mean 'model.hidden_size'?"),
    ("trian: {}", "trian", "did you mean 'train'?"),
    ("train: {zzz: 1}", "train.zzz", "valid keys in train: batch_size, seq_len"),
    ("qqq: 1", "qqq", "valid keys: name, out_dir, data, model, train"),
    ("model: lstm", "model", "must be a mapping"),
    ("train: {batch_size: true}", "train.batch_size", "must be an integer"),
    ("train: {batch_size: 'abc'}", "train.batch_size", "must be an integer"),
    ("train: {batch_size: 3.5}", "train.batch_size", "must be an integer"),
    ("train: {max_steps: 1e-3}", "train.max_steps", "must be an integer"),
    ("train: {learning_rate: 'fast'}", "train.learning_rate", "must be a number"),
    ("train: {learning_rate: [1]}", "train.learning_rate", "must be a number"),
    ("train: {learning_rate: .nan}", "train.learning_rate", "must be a number"),
    ("train: {learning_rate: null}", "train.learning_rate", "got null"),
    ("model: {peephole: 'yes please'}", "model.peephole", "true or false"),
    ("model: {peephole: 1}", "model.peephole", "true or false"),
    ("name: 2024", "name", "quote"),
    ("name: ''", "name", "non-empty string"),
    ("name: ../elsewhere", "name", "plain directory name"),
    ("data: {path: []}", "data.path", "non-empty list of strings"),
    ("data: {path: [a.txt, 3]}", "data.path", "list of strings"),
    ("data: {encoding: klingon}", "data.encoding", "text encoding"),
    ("data: {encoding: base64}", "data.encoding", "text encoding"),
    ("data: {val_fraction: 0}", "data.val_fraction", "> 0 and < 1"),
    ("data: {val_fraction: 1.0}", "data.val_fraction", "> 0 and < 1"),
    ("data: {max_vocab: 1}", "data.max_vocab", ">= 2"),
    ("model: {cell: transformer}", "model.cell", "one of lstm, gru, rnn"),
    ("model: {hidden_size: 0}", "model.hidden_size", ">= 1"),
    ("model: {num_layers: 17}", "model.num_layers", "<= 16"),
    ("model: {num_layers: 0}", "model.num_layers", ">= 1"),
    ("model: {embedding_size: -1}", "model.embedding_size", ">= 0"),
    ("model: {dropout: 1.0}", "model.dropout", "< 1"),
    ("model: {dropout: -0.1}", "model.dropout", ">= 0"),
    ("model: {nonlinearity: sigmoid, cell: rnn}", "model.nonlinearity", "one of tanh, relu"),
    ("model: {cell: gru, peephole: true}", "model.peephole", "only to cell lstm"),
    ("model: {cell: lstm, nonlinearity: relu}", "model.nonlinearity", "only to cell rnn"),
    ("train: {batch_size: 0}", "train.batch_size", ">= 1"),
    ("train: {seq_len: 0}", "train.seq_len", ">= 1"),
    ("train: {max_steps: auto}", "train.max_steps", "set train.max_time"),
    ("train: {max_steps: soon, max_time: 60}", "train.max_steps", "must be an integer or auto"),
    ("train: {max_steps: auto, max_time: 60, schedule: cosine, warmup_steps: 10}", "train.warmup_steps",
     "at least 35"),
    ("train: {processes: many}", "train.processes", "must be an integer or auto"),
    ("train: {processes: 0}", "train.processes", ">= 1"),
    ("train: {optimizer: lbfgs}", "train.optimizer", "one of sgd, adagrad, rmsprop, adam"),
    ("train: {learning_rate: 0}", "train.learning_rate", "> 0"),
    ("train: {learning_rate: -1e-3}", "train.learning_rate", "> 0"),
    ("train: {momentum: 1}", "train.momentum", "< 1"),
    ("train: {beta2: 1.5}", "train.beta2", "< 1"),
    ("train: {eps: 0}", "train.eps", "> 0"),
    ("train: {weight_decay: -1}", "train.weight_decay", ">= 0"),
    ("train: {grad_clip: -5}", "train.grad_clip", ">= 0"),
    ("train: {clip_mode: max}", "train.clip_mode", "one of norm, value"),
    ("train: {schedule: linear}", "train.schedule", "one of constant, exponential, step, cosine"),
    ("train: {warmup_steps: -1}", "train.warmup_steps", ">= 0"),
    ("train: {decay_every: 0}", "train.decay_every", ">= 1"),
    ("train: {min_lr: 0.1}", "train.min_lr", "must not exceed train.learning_rate"),
    ("train: {max_steps: 0}", "train.max_steps", ">= 1"),
    ("train: {max_time: 0}", "train.max_time", "> 0"),
    ("train: {max_steps: null}", "train.max_steps", "set at least one"),
    ("train: {schedule: cosine, max_steps: null, max_time: 60}", "train.schedule",
     "set train.max_steps or train.max_epochs"),
    ("train: {eval_every: 0}", "train.eval_every", ">= 1"),
    ("train: {sample_length: -1}", "train.sample_length", ">= 0"),
    ("train: {seed: -1}", "train.seed", ">= 0"),
    ("train: {dtype: float16}", "train.dtype", "one of float32, float64"),
    ("train: {divergence_factor: 1}", "train.divergence_factor", "> 1"),
    ("train: {rollback_lr_factor: 1}", "train.rollback_lr_factor", "> 0 and < 1"),
    ("train: {max_rollbacks: -1}", "train.max_rollbacks", ">= 0"),
]


@pytest.mark.parametrize("text, key, phrase", BAD_VALUES)
def test_bad_values_name_the_file_and_key(tmp_path, text, key, phrase):
    path = write(tmp_path, text + "\n")
    message = usage_error(path)
    assert message.startswith(f"{path}: ")
    assert key in message
    assert phrase in message


@pytest.mark.parametrize("changes, key", [
    ({"train": {"learning_rate": 0}}, "train.learning_rate"),
    ({"model": {"cell": "lstn"}}, "model.cell"),
    ({"model": {"hidden": 3}}, "model.hidden"),
    ({"extra": 1}, "extra"),
    ({"data": "corpus.txt"}, "data"),
])
def test_config_from_dict_validates_like_a_file(changes, key):
    d = config_to_dict(Config())
    for name, value in changes.items():
        d[name] = {**d[name], **value} if isinstance(value, dict) else value
    with pytest.raises(UsageError) as exc_info:
        config_from_dict(d, source="ckpt.npz")
    assert str(exc_info.value).startswith("ckpt.npz: ")
    assert key in str(exc_info.value)


def test_config_from_dict_refuses_a_non_mapping():
    with pytest.raises(UsageError, match="ckpt.npz"):
        config_from_dict(["not", "a", "dict"], source="ckpt.npz")


def test_dataclasses_built_in_code_are_validated_too():
    with pytest.raises(UsageError, match="train.learning_rate"):
        TrainConfig(learning_rate=0)
    with pytest.raises(UsageError, match="model.peephole"):
        ModelConfig(cell="gru", peephole=True)
    with pytest.raises(UsageError, match="train.batch_size"):
        dataclasses.replace(Config().train, batch_size=0)
    with pytest.raises(UsageError, match="data"):
        Config(data={"path": "x.txt"})
    assert TrainConfig(learning_rate="2e-3").learning_rate == 0.002


def test_file_problems_are_usage_errors_naming_the_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    assert usage_error(missing).startswith(f"{missing}: ")
    assert "not found" in usage_error(missing)
    assert "directory" in usage_error(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert "UTF-8" in usage_error(latin1)


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    path = write(tmp_path, """
        model:
          cell: lstm
          hidden_size: [128
        train: {}
    """)
    message = usage_error(path)
    assert message.startswith(f"{path}: line ")
    assert "column" in message


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just text\n", "str"),
                                        ("42\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    message = usage_error(write(tmp_path, text))
    assert "top level must be a mapping" in message and kind in message


def test_python_tags_are_refused_without_constructing_anything(tmp_path):
    marker = tmp_path / "marker"
    path = write(tmp_path, f"""
        name: !!python/object/apply:os.system ["touch '{marker}'"]
    """)
    message = usage_error(path)
    assert message.startswith(f"{path}: line 2, column 7: ")
    assert "!!python/object/apply:os.system" in message and "not allowed" in message
    assert not marker.exists()


def test_python_tag_in_an_override_is_refused_without_running(tmp_path):
    marker = tmp_path / "marker"
    override = f"name=!!python/object/apply:os.system [\"touch '{marker}'\"]"
    message = usage_error(None, [override])
    assert message.startswith(f"--set {override}: ")
    assert "not allowed" in message
    assert not marker.exists()


def test_overrides_apply_over_the_file_in_order(tmp_path):
    path = write(tmp_path, """
        name: base
        train: {learning_rate: 0.01, batch_size: 8}
    """)
    cfg = load_config(path, ["train.learning_rate=1e-3", "model.cell=gru", "name=other",
                             "train.batch_size=4", "train.batch_size=16"])
    assert cfg.train.learning_rate == 1e-3
    assert cfg.model.cell == "gru"
    assert cfg.name == "other"
    assert cfg.train.batch_size == 16


def test_overrides_without_a_file_start_from_defaults():
    cfg = load_config(None, ["train.max_steps=null", "train.max_time=30", "data.val_path=null"])
    assert cfg.train.max_steps is None and cfg.train.max_time == 30.0
    assert cfg == dataclasses.replace(Config(), train=dataclasses.replace(
        Config().train, max_steps=None, max_time=30.0))


@pytest.mark.parametrize("override, value", [
    ("name=2024", "2024"),  # text for a text field, though YAML would read a number
    ("name=yes", "yes"),
    ("data.path=[a.txt, b.txt]", ["a.txt", "b.txt"]),
    ("data.encoding=latin-1", "latin-1"),
])
def test_text_fields_take_the_override_text(override, value):
    cfg = load_config(None, [override])
    key = override.partition("=")[0]
    section, _, field = key.rpartition(".")
    assert getattr(getattr(cfg, section) if section else cfg, field) == value


@pytest.mark.parametrize("override, phrase", [
    ("train.lerning_rate=1e-3", "did you mean 'train.learning_rate'?"),
    ("trian.learning_rate=1e-3", "did you mean 'train'?"),
    ("train.zzz=1", "valid keys in train:"),
    ("nmae=x", "did you mean 'name'?"),
    ("train.learning_rate", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("train=3", "is a section"),
    ("train.learning.rate=3", "section.key"),
    ("train.learning_rate=0", "train.learning_rate must be > 0"),
    ("train.batch_size=many", "train.batch_size must be an integer"),
    ("model.cell=[lstm", "invalid YAML"),
])
def test_bad_overrides_name_the_override(override, phrase):
    message = usage_error(None, [override])
    assert message.startswith(f"--set {override}: ")
    assert phrase in message


def test_errors_blame_the_override_that_set_the_bad_value(tmp_path):
    path = write(tmp_path, "model: {cell: gru}\n")
    message = usage_error(path, ["model.peephole=true"])
    assert message.startswith("--set model.peephole=true: ") and "model.peephole" in message
    # a bad value that came from the file is still blamed on the file
    path = write(tmp_path, "train: {batch_size: 0}\n")
    assert usage_error(path, ["train.seq_len=8"]).startswith(f"{path}: ")


def test_a_file_section_that_is_not_a_mapping_is_blamed_on_the_file(tmp_path):
    path = write(tmp_path, "train: 3\n")
    message = usage_error(path, ["train.seq_len=8"])
    assert message.startswith(f"{path}: train must be a mapping")


def unusual_config():
    return Config(
        name="运行-1",
        out_dir="out dir",
        data=DataConfig(path=["a.txt", "b.txt"], val_path="v.txt", val_fraction=0.25,
                        encoding="latin-1", max_vocab=70),
        model=ModelConfig(cell="rnn", hidden_size=7, num_layers=3, embedding_size=5,
                          dropout=0.125, nonlinearity="relu"),
        train=TrainConfig(learning_rate=3.3e-4, eps=1e-12, weight_decay=1e-2, schedule="cosine",
                          warmup_steps=10, min_lr=1e-6, max_steps=None, max_epochs=2,
                          max_time=12.5, seed=0, dtype="float64", clip_mode="value"),
    )


def test_dump_then_load_gives_an_equal_config(tmp_path):
    for cfg in (Config(), unusual_config()):
        path = tmp_path / "config.yaml"
        dump_config(cfg, path)
        assert load_config(path) == cfg


def test_dump_writes_keys_in_schema_order(tmp_path):
    path = tmp_path / "config.yaml"
    dump_config(Config(), path)
    top = [line.split(":")[0] for line in path.read_text(encoding="utf-8").splitlines()
           if line and not line.startswith((" ", "#"))]
    assert top == ["name", "out_dir", "data", "model", "train"]
    text = path.read_text(encoding="utf-8")
    assert text.index("batch_size") < text.index("seq_len") < text.index("max_rollbacks")


def test_dump_to_an_unwritable_place_is_a_charrnn_error(tmp_path):
    path = tmp_path / "no" / "such" / "config.yaml"
    with pytest.raises(CharRNNError, match="cannot write"):
        dump_config(Config(), path)


def test_dict_form_is_plain_json_and_round_trips():
    cfg = unusual_config()
    d = config_to_dict(cfg)
    assert json.loads(json.dumps(d)) == d
    assert list(d) == ["name", "out_dir", "data", "model", "train"]
    assert config_from_dict(json.loads(json.dumps(d))) == cfg


@pytest.mark.parametrize("name", ["tiny.yaml", "shakespeare.yaml"])
def test_shipped_configs_load_cleanly(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.name == name.removesuffix(".yaml")
    assert (REPO / cfg.data.path).is_file()


def test_every_config_in_the_configs_directory_loads():
    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        assert load_config(path).name


def test_tiny_config_is_small_and_shakespeare_is_the_big_one():
    tiny = load_config(REPO / "configs" / "tiny.yaml")
    big = load_config(REPO / "configs" / "shakespeare.yaml")
    assert tiny.model.num_layers == 1 and tiny.train.max_steps <= 1000
    assert big.model.num_layers == 2 and big.model.hidden_size >= 256
    assert big.train.schedule == "cosine" and big.train.max_time == 3600


# -- the README's table of keys ---------------------------------------------------------------


def _number(value):
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e7 else f"{value:g}"


def _allowed(f) -> str | None:
    """The README's 'allowed' cell for a field with declared rules (None: free text)."""
    rules, kinds = f.metadata, getattr(f.type, "__args__", (f.type,))
    low = ("[", rules["ge"]) if "ge" in rules else ("(", rules["gt"]) if "gt" in rules else None
    high = (rules["le"], "]") if "le" in rules else (rules["lt"], ")") if "lt" in rules else None
    if "choices" in rules:
        text = ", ".join(f"`{choice}`" for choice in rules["choices"])
    elif low and high:
        text = f"{low[0]}{_number(low[1])}, {_number(high[0])}{high[1]}"
    elif low:
        text = f"{'>=' if low[0] == '[' else '>'} {_number(low[1])}"
    elif bool in kinds:
        text = "`true`, `false`"
    else:
        return None
    if str in kinds and (low or high):  # a count or a word (train.processes, train.max_steps)
        text += ", `auto`"
    return text + (", `null`" if type(None) in kinds else "")


def test_the_readme_lists_every_key_with_its_default_and_range(repo_root):
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    rows = [line.split(" | ") for line in readme.splitlines()
            if line.startswith("| `") and line.count(" | ") == 3]
    table = {key.strip("|` "): (default.strip("`"), allowed) for key, default, allowed, _ in rows}
    fields = {}
    for prefix, section in (("", Config), ("data.", DataConfig), ("model.", ModelConfig), ("train.", TrainConfig)):
        fields.update({prefix + f.name: f for f in dataclasses.fields(section)
                       if f.name not in ("data", "model", "train")})
    assert list(table) == list(fields)
    for key, f in fields.items():
        default, allowed = table[key]
        value = yaml.safe_load(default)
        assert (float(value) == f.default if isinstance(f.default, float) else value == f.default), key
        expected = _allowed(f)
        assert allowed == expected if expected else allowed, key


def test_the_names_a_config_offers_are_the_ones_that_get_built():
    import types

    import numpy as np

    from charrnn import names
    from charrnn.cells import CELLS, make_cell
    from charrnn.config import load_config
    from charrnn.optim import OPTIMIZERS, SCHEDULES, learning_rate
    from charrnn.start import optimizer_for

    assert tuple(CELLS) == names.CELLS and tuple(OPTIMIZERS) == names.OPTIMIZERS
    assert SCHEDULES == names.SCHEDULES
    for kind in names.CELLS:
        cfg = load_config(None, [f"model.cell={kind}"])
        assert isinstance(make_cell(cfg.model.cell, 3, 4), CELLS[kind])
    for name in names.OPTIMIZERS:
        cfg = load_config(None, [f"train.optimizer={name}"])
        model = types.SimpleNamespace(params={"w": np.zeros(2)})
        assert isinstance(optimizer_for(cfg, model), OPTIMIZERS[name])
    for schedule in names.SCHEDULES:
        cfg = load_config(None, [f"train.schedule={schedule}", "train.max_steps=10"])
        assert learning_rate(3, 1e-3, cfg.train.schedule, total_steps=10) > 0
    for field, offered in (("model.cell", names.CELLS), ("train.optimizer", names.OPTIMIZERS),
                           ("train.schedule", names.SCHEDULES), ("model.head", names.HEADS)):
        with pytest.raises(Exception, match=", ".join(offered[:2])):
            load_config(None, [f"{field}=nonsense"])
