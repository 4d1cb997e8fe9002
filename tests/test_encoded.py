"""Streaming reads and the encoded-corpus cache: the same ids as reading the text whole, and a
cache that is never served stale, damaged, or required."""

import json
import os

import numpy as np
import pytest

from charrnn import reading
from charrnn.corpus import Vocab, split
from charrnn.encoded import encode_file, load_encoded
from charrnn.errors import CharRNNError
from charrnn.reading import read_text, text_chunks

from runs import invoke, records, write_config

# 1-, 2-, 3- and 4-byte UTF-8 characters, CRLF line ends and a lone CR.
TEXT = "Tang 春眠不觉晓, é ü 𝄞 🌸\r\nline two\rthree\r\n" * 40


def _whole(text: str) -> str:
    """read_text's rules applied to the whole text at once."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64, 1 << 20])
@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_chunks_split_anywhere_give_the_whole_text(tmp_path, chunk_bytes, bom):
    path = tmp_path / "t.txt"
    path.write_bytes((bom + TEXT).encode("utf-8"))
    pieces = list(text_chunks(path, chunk_bytes=chunk_bytes))
    assert "".join(pieces) == _whole(TEXT)
    assert all(pieces)  # no empty pieces
    if chunk_bytes < 64:
        assert len(pieces) > 10  # really chunked


@pytest.mark.parametrize("chunk_bytes", [1, 4, 1000])
def test_utf16_and_gzip_stream_too(tmp_path, chunk_bytes):
    import gzip

    (tmp_path / "u16.txt").write_bytes(TEXT.encode("utf-16"))
    assert "".join(text_chunks(tmp_path / "u16.txt", "utf-16", chunk_bytes)) == _whole(TEXT)
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(TEXT.encode("utf-8")))
    assert "".join(text_chunks(str(tmp_path / "t.txt.gz"), chunk_bytes=chunk_bytes)) == _whole(TEXT)


@pytest.mark.parametrize("where", ["first", "straddling", "last", "truncated at the end"])
def test_bad_utf8_is_named_with_its_byte_offset_in_any_chunk(tmp_path, where):
    good = ("晓" * 3000).encode("utf-8")  # 9,000 bytes: nine chunks of 1,000
    data = {"first": b"\xff" + good,
            "straddling": good[:3999] + b"\xe6\x99x" + good[3999:],
            "last": good + b"\xc3(",
            "truncated at the end": good + "晓".encode("utf-8")[:2]}[where]
    offset = {"first": 0, "straddling": 3999, "last": 9000, "truncated at the end": 9000}[where]
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(CharRNNError, match=f"not valid UTF-8 at byte offset {offset} "):
        "".join(text_chunks(path, chunk_bytes=1000))
    with pytest.raises(CharRNNError, match=f"not valid UTF-8 at byte offset {offset} "):
        read_text(path)


def test_a_nul_byte_in_a_later_chunk_is_named_with_its_offset(tmp_path):
    path = tmp_path / "bin.txt"
    path.write_bytes(b"a" * 2500 + b"\x00" + b"b" * 10)
    with pytest.raises(CharRNNError, match="NUL byte at offset 2500"):
        "".join(text_chunks(path, chunk_bytes=1000))


def _reference(paths, val_paths=(), max_vocab=None, val_fraction=None):
    """Vocabulary and ids the way a whole-text read gives them."""
    text = "".join(read_text(p) for p in paths)
    val = "".join(read_text(p) for p in val_paths)
    vocab = Vocab.build(text + val, max_vocab)
    on_unknown = "unk" if vocab.unk_id is not None else "error"
    return vocab, vocab.encode(text, on_unknown), vocab.encode(val, on_unknown) if val_paths else None


@pytest.fixture
def small_chunks(monkeypatch):
    """Every streaming read in 997-byte chunks, so that small test corpora span many chunks."""
    monkeypatch.setattr(reading, "CHUNK_BYTES", 997)


@pytest.fixture
def corpus_files(tmp_path):
    a, b, v = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "v.txt"
    a.write_text(TEXT * 3, encoding="utf-8")
    b.write_text("另一个文件 with other letters: qxz\n" * 50, encoding="utf-8")
    v.write_text("validation 春 text\r\n" * 20, encoding="utf-8")
    return a, b, v


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("max_vocab", [None, 12])
def test_streamed_ids_vocabulary_and_split_equal_the_whole_text_path(tmp_path, corpus_files, small_chunks,
                                                                      cached, max_vocab):
    a, b, v = corpus_files
    cache = tmp_path / "cache" if cached else None
    for val_paths in ([], [v]):
        vocab, ids, val_ids = _reference([a, b], val_paths, max_vocab)
        for _ in range(2):  # built, then (when cached) read back from the cache
            got = load_encoded([str(a), str(b)], [str(p) for p in val_paths], "utf-8", max_vocab, cache)
            assert got.vocab == vocab
            np.testing.assert_array_equal(got.ids, ids)
            assert got.ids.dtype == ids.dtype
            np.testing.assert_array_equal(got.counts, np.bincount(ids, minlength=len(vocab)))
            if val_paths:
                np.testing.assert_array_equal(got.val_ids, val_ids)
            else:
                assert got.val_ids is None
                for part, want in zip(split(got.ids, 0.1), split(ids, 0.1)):
                    np.testing.assert_array_equal(part, want)
        if cached:
            assert got.source == "cache" and isinstance(got.ids, np.memmap)
            assert not got.ids.flags.writeable


def _entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_a_changed_file_or_max_vocab_gets_a_new_entry(tmp_path, corpus_files):
    a, _, _ = corpus_files
    cache = tmp_path / "cache"
    first = load_encoded(str(a), None, cache_dir=cache)
    assert first.source == "built and cached"
    assert load_encoded(str(a), None, cache_dir=cache).source == "cache"
    # Same size, same modification time, one character different: the content decides.
    stat = os.stat(a)
    a.write_text((TEXT * 3).replace("T", "X", 1), encoding="utf-8")
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(a).st_size == stat.st_size
    changed = load_encoded(str(a), None, cache_dir=cache)
    assert changed.source == "built and cached"
    np.testing.assert_array_equal(changed.ids, _reference([a])[1])
    capped = load_encoded(str(a), None, max_vocab=8, cache_dir=cache)
    assert capped.source == "built and cached" and len(capped.vocab) == 8
    latin = load_encoded(str(a), None, encoding="latin-1", cache_dir=cache)
    assert latin.source == "built and cached"
    assert len(_entries(cache)) == 4


@pytest.mark.parametrize("damage", ["truncated ids", "tampered ids", "tampered meta", "missing meta",
                                    "not an npy"])
def test_a_damaged_entry_is_rebuilt_with_a_warning(tmp_path, corpus_files, damage):
    a, _, v = corpus_files
    cache = tmp_path / "cache"
    load_encoded(str(a), str(v), cache_dir=cache)
    (entry,) = cache.iterdir()
    ids_file, meta_file = entry / "train.npy", entry / "meta.json"
    if damage == "truncated ids":
        ids_file.write_bytes(ids_file.read_bytes()[:-10])
    elif damage == "tampered ids":
        data = bytearray(ids_file.read_bytes())
        data[-3] ^= 1
        ids_file.write_bytes(bytes(data))
    elif damage == "tampered meta":
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        meta["vocab"] = meta["vocab"][::-1]
        meta_file.write_text(json.dumps(meta), encoding="utf-8")
    elif damage == "missing meta":
        meta_file.unlink()
    else:
        ids_file.write_bytes(b"garbage")
    warnings = []
    got = load_encoded(str(a), str(v), cache_dir=cache, warn=warnings.append)
    assert len(warnings) == 1 and "is damaged" in warnings[0] and "rebuilding it" in warnings[0]
    assert got.source == "built and cached"
    vocab, ids, val_ids = _reference([a], [v])
    assert got.vocab == vocab
    np.testing.assert_array_equal(got.ids, ids)
    np.testing.assert_array_equal(got.val_ids, val_ids)
    again = []
    assert load_encoded(str(a), str(v), cache_dir=cache, warn=again.append).source == "cache"
    assert again == []


def test_a_cache_directory_that_cannot_be_written_means_loading_without_it(tmp_path, corpus_files):
    a, _, _ = corpus_files
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be", encoding="utf-8")
    warnings = []
    got = load_encoded(str(a), None, cache_dir=blocker / "charrnn", warn=warnings.append)
    assert len(warnings) == 1 and "cannot write the corpus cache" in warnings[0]
    assert got.source == "no cache" and got.entry is None
    np.testing.assert_array_equal(got.ids, _reference([a])[1])


def test_a_full_cache_disk_leaves_no_partial_entry(tmp_path, corpus_files, monkeypatch):
    import errno

    a, _, _ = corpus_files

    def no_space(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    cache = tmp_path / "cache"
    warnings = []
    got = load_encoded(str(a), None, cache_dir=cache, warn=warnings.append)
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    np.testing.assert_array_equal(got.ids, _reference([a])[1])
    assert _entries(cache) == []  # the scratch directory is gone too


def test_encode_file_streams_and_counts_what_it_leaves_out(tmp_path, small_chunks):
    path = tmp_path / "t.txt"
    path.write_text(TEXT, encoding="utf-8")
    vocab = Vocab.build("Tang line two\n")
    ids, excluded = encode_file(str(path), vocab)
    text = _whole(TEXT)
    np.testing.assert_array_equal(ids, vocab.encode(text, "drop"))
    assert excluded == len(text) - len(ids) > 0


def test_training_and_eval_with_the_cache_and_without(tmp_path, repo_root, corpus_files):
    a, _, v = corpus_files
    base = {"data": {"path": str(a), "val_path": str(v), "cache_dir": str(tmp_path / "cache")},
            "model": {"hidden_size": 8, "num_layers": 1},
            "train": {"batch_size": 2, "seq_len": 8, "max_steps": 3, "eval_every": 100,
                      "sample_length": 0, "warmup_steps": 0}}
    losses = []
    for name, cache in (("cached", True), ("again", True), ("uncached", False)):
        cfg = write_config(tmp_path, a, f"{name}.yaml", base=base, data={"cache": cache,
                                                                           "val_path": str(v)})
        result = invoke("train", "--config", cfg, "--out", tmp_path / name, "--no-progress")
        assert result.exit_code == 0, result.output
        losses.append(records(tmp_path / name, "eval")[-1]["val_loss"])
    assert losses[0] == losses[1] == losses[2]
    assert len(_entries(tmp_path / "cache")) == 1
    result = invoke("eval", tmp_path / "cached" / "best.npz", "--val")
    assert result.exit_code == 0 and f"loss {losses[0]:.6f}" in result.output


def test_eval_chars_limits_periodic_evaluations_and_the_end_scores_everything(tmp_path, corpus_files):
    a, _, v = corpus_files
    base = {"data": {"path": str(a), "val_path": str(v)}, "model": {"hidden_size": 8, "num_layers": 1},
            "train": {"batch_size": 2, "seq_len": 8, "max_steps": 4, "eval_every": 2,
                      "eval_chars": 50, "sample_length": 0, "warmup_steps": 0}}
    cfg = write_config(tmp_path, a, base=base, data={"val_path": str(v)})
    result = invoke("train", "--config", cfg, "--out", tmp_path / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    from charrnn.checkpoint import load_model
    from charrnn.evaluate import evaluate

    model, vocab, _, _ = load_model(tmp_path / "run" / "last.npz")
    val_ids = vocab.encode(read_text(v))
    periodic = records(tmp_path / "run", "eval")
    assert [r["step"] for r in periodic] == [2, 4]
    assert periodic[-1]["val_loss"] == pytest.approx(evaluate(model, val_ids[:50], 2, 8), rel=1e-6)
    (final,) = records(tmp_path / "run", "final")
    assert final["val_chars"] == len(val_ids)
    assert final["val_loss"] == pytest.approx(evaluate(model, val_ids, 2, 8), rel=1e-6)
    assert "on the whole validation text" in result.output


def test_bad_utf8_late_in_a_large_corpus_is_one_line_and_leaves_no_cache_entry(tmp_path, small_chunks):
    corpus = tmp_path / "big.txt"
    corpus.write_bytes(("first verse\n" * 2000).encode() + b"\xe2\x28\xa1 tail\n")
    cache = tmp_path / "cache"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  path: {corpus}\n  cache_dir: {cache}\ntrain:\n  max_steps: 1\n",
                   encoding="utf-8")
    result = invoke("train", "--config", cfg, "--out", tmp_path / "run", "--no-progress")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"charrnn: error: {corpus}: not valid UTF-8 at byte offset 24000 (use --encoding / data.encoding "
        "for other codecs)")
    assert "Traceback" not in result.output
    assert _entries(cache) == [] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("on_unknown", ["drop", "unk"])
@pytest.mark.parametrize("text", ["plain ascii text\n" * 30, "ascii and 春 and é\n" * 30])
def test_encode_fast_ascii_path_agrees_with_a_dictionary(text, on_unknown):
    # The vocabulary lacks "a", "s" and "春"; with max_size it gains <unk>.
    kept = sorted(set(text) - {"a", "s", "春"})
    vocab = Vocab(kept + ([Vocab.UNK] if on_unknown == "unk" else []))
    want = [vocab.index.get(ch, vocab.unk_id) for ch in text]
    want = [i for i in want if i is not None]
    np.testing.assert_array_equal(vocab.encode(text, on_unknown), want)
    full = Vocab.build(text)
    np.testing.assert_array_equal(full.encode(text), [full.index[ch] for ch in text])
    with pytest.raises(CharRNNError, match="not in the vocabulary: 'a', 's'"):
        vocab.encode(text, "error")
