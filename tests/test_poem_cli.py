"""Tang poems through the command line: any model keeps the forms; acrostic, rhyme, no-copy, seed."""

import gzip
import json

import pytest
import yaml
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.poetry import FORMS

from runs import invoke


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, repo_root):
    """A model trained for 3 steps on 400 real poems: as good as untrained."""
    directory = tmp_path_factory.mktemp("tang")
    with gzip.open(repo_root / "corpora" / "tang" / "train.txt.gz", "rt", encoding="utf-8") as fh:
        poems = [next(fh) for _ in range(400)]
    corpus = directory / "poems.txt"
    corpus.write_text("".join(poems), encoding="utf-8")
    config = {
        "name": "p", "data": {"path": str(corpus), "val_fraction": 0.1},
        "model": {"cell": "gru", "hidden_size": 16, "num_layers": 1, "embedding_size": 8},
        "train": {"batch_size": 4, "seq_len": 32, "max_steps": 3, "eval_every": 3, "sample_length": 0},
    }
    (directory / "c.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    result = invoke("train", "--config", directory / "c.yaml", "--out", directory / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    return directory / "run" / "last.npz", corpus


@pytest.mark.parametrize("form", list(FORMS))
def test_200_poems_all_in_the_requested_form(checkpoint, form, tmp_path):
    ckpt, corpus = checkpoint
    result = invoke("poem", ckpt, "--form", form, "--num", 200, "--seed", 1)
    assert result.exit_code == 0, result.output
    (tmp_path / "poems.txt").write_text(result.output, encoding="utf-8")
    metrics = invoke("poem-metrics", tmp_path / "poems.txt", "--json")
    m = json.loads(metrics.output)
    assert m["poems"] == 200 and m["valid"] == 1.0 and m["forms"][form] == 1.0


def test_acrostic_heads_are_exact_and_seed_reproduces(checkpoint):
    ckpt, corpus = checkpoint
    text = corpus.read_text(encoding="utf-8")
    acrostic = "".join(sorted({c for c in text if "\u4e00" <= c <= "\u9fff"}, key=text.count)[-8:])
    first = invoke("poem", ckpt, "--form", "wulv", "--acrostic", acrostic, "--num", 5, "--seed", 3)
    again = invoke("poem", ckpt, "--form", "五言律诗", "--acrostic", acrostic, "--num", 5, "--seed", 3)
    assert first.exit_code == 0 and first.output == again.output
    for poem in first.output.split():
        lines = [line for part in poem.split("。") for line in part.split("，") if line]
        assert "".join(line[0] for line in lines) == acrostic


def test_rhyme_and_no_copy(checkpoint, tmp_path):
    ckpt, corpus = checkpoint
    result = invoke("poem", ckpt, "--form", "qijue", "--num", 100, "--seed", 2, "--rhyme", "--no-copy")
    assert result.exit_code == 0, result.output
    (tmp_path / "p.txt").write_text(result.output, encoding="utf-8")
    m = json.loads(invoke("poem-metrics", tmp_path / "p.txt", "--corpus", corpus, "--json").output)
    assert m["overall"]["rhyme"] == 1.0 and m["copied"] == 0.0


@pytest.mark.parametrize("form", list(FORMS))
def test_strict_poems_of_a_near_untrained_model_all_fit_a_template_and_rhyme(checkpoint, form, tmp_path):
    ckpt, corpus = checkpoint
    result = invoke("poem", ckpt, "--form", form, "--num", 200, "--seed", 1, "--strict",
                    "--repeat-penalty", 2, "--best-of", 2, "--stats")
    assert result.exit_code == 0, result.output
    assert "200 poems: mean NLL" in result.stderr and "s per poem" in result.stderr
    (tmp_path / "poems.txt").write_text(result.stdout, encoding="utf-8")
    m = json.loads(invoke("poem-metrics", tmp_path / "poems.txt", "--json").output)
    assert m["valid"] == 1.0
    assert m["overall"]["template"] == m["overall"]["rhyme"] == m["overall"]["level_ends"] == 1.0
    assert m["by_form"][form]["poems"] == 200


def test_poem_metrics_prints_a_row_per_rule(checkpoint, tmp_path):
    (tmp_path / "p.txt").write_text("白日依山尽，黄河入海流。欲穷千里目，更上一层楼。\n", encoding="utf-8")
    out = invoke("poem-metrics", tmp_path / "p.txt").output
    for name in ("template fit", "粘", "对", "平 at even ends", "rhyme 平水韵", "first line rhymes",
                 "重韵", "repeated char", "rhyme 十三辙"):
        assert any(line.startswith(name) for line in out.splitlines()), name
    assert "100.0%" in next(line for line in out.splitlines() if line.startswith("template fit"))


@pytest.mark.parametrize("args,status,culprit", [
    (["--form", "wujue", "--template", "S1"], 2, "--template needs --tones"),
    (["--form", "wujue", "--strict", "--rhyme-scheme", "shisan"], 2, "--rhyme-scheme shisan"),
    (["--form", "wujue", "--best-of", "0"], 2, "--best-of"),
    (["--form", "wujue", "--repeat-penalty", "-1"], 2, "--repeat-penalty"),
    (["--form", "wujue", "--strict", "--template", "S2", "--start", "白日依山尽"], 2, "--start"),
    (["--form", "sonnet"], 2, "--form"),
    (["--form", "wujue", "--acrostic", "春夏秋"], 2, "--acrostic"),
    (["--form", "wujue", "--acrostic", "abcd"], 2, "--acrostic"),
    (["--form", "wujue", "--num", "0"], 2, "--num"),
    (["--form", "wujue", "--temperature", "-1"], 2, "--temperature"),
])
def test_poem_errors_are_one_line(checkpoint, args, status, culprit):
    result = CliRunner().invoke(cli, ["poem", str(checkpoint[0]), *args])
    assert result.exit_code == status
    assert culprit in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
