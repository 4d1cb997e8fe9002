"""Tests for charrnn.corpus: reading files, the vocabulary, splits and the two batch layouts."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from charrnn.corpus import BatchStream, Vocab, eval_batches, split
from charrnn.reading import read_text, read_texts
from charrnn.errors import CharRNNError, UsageError


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# ------------------------------------------------------------------------------------- reading

def test_read_drops_bom_and_converts_crlf(tmp_path):
    path = write(tmp_path, "t.txt", b"\xef\xbb\xbfline one\r\nline two\r\n\xc3\xa9\r")
    assert read_text(path) == "line one\nline two\n\u00e9\r"


def test_read_gz_and_pathlike(tmp_path):
    path = tmp_path / "t.txt.gz"
    path.write_bytes(gzip.compress("\ufeffh\u00e9llo\r\n\u6f22".encode("utf-8")))
    assert read_text(path) == "h\u00e9llo\n\u6f22"


def test_read_other_encodings(tmp_path):
    assert read_text(write(tmp_path, "l.txt", b"caf\xe9"), encoding="latin-1") == "caf\u00e9"
    # UTF-16 text is full of NUL bytes and must not be taken for binary.
    wide = write(tmp_path, "w.txt", "h\u00e9\r\n".encode("utf-16"))
    assert read_text(wide, encoding="utf-16") == "h\u00e9\n"
    for name in ("klingon", "base64", "rot13"):  # unknown, or codecs that do not decode bytes to text
        with pytest.raises(UsageError, match=f"'{name}' is not a text encoding"):
            read_text(write(tmp_path, "k.txt", b"x"), encoding=name)


def test_invalid_utf8_reports_byte_offset(tmp_path):
    # "ab" + "é" (2 bytes) = 4 bytes, then a lone continuation byte at offset 4
    path = write(tmp_path, "bad.txt", b"ab\xc3\xa9\x80cd")
    with pytest.raises(CharRNNError) as info:
        read_text(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid UTF-8 at byte offset 4 ")
    assert "--encoding" in message and "\n" not in message


def test_invalid_utf8_in_gz_reports_offset_in_decompressed_data(tmp_path):
    path = write(tmp_path, "bad.txt.gz", gzip.compress(b"abc\xff"))
    with pytest.raises(CharRNNError, match="byte offset 3 of the decompressed data"):
        read_text(path)


@pytest.mark.parametrize("name, data, match", [
    ("empty.txt", b"", "empty"),
    ("bom.txt", b"\xef\xbb\xbf", "no text"),
    ("bin.dat", b"PK\x03\x04\x00\x00\x01", "binary file \\(NUL byte at offset 4\\)"),
    ("bad.gz", b"this is not gzip data", "not a valid gzip file"),
    ("cut.gz", gzip.compress(b"hello world" * 100)[:30], "not a valid gzip file"),
])
def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path, name, data, match):
    path = write(tmp_path, name, data)
    with pytest.raises(CharRNNError, match=match) as info:
        read_text(path)
    assert str(info.value).startswith(path) and "\n" not in str(info.value)


def test_missing_file_and_directory(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(CharRNNError, match="no such file") as info:
        read_text(missing)
    assert missing in str(info.value)
    with pytest.raises(CharRNNError, match="is a directory"):
        read_text(str(tmp_path))


def test_read_texts_concatenates_in_order(tmp_path):
    a = write(tmp_path, "a.txt", b"one\n")
    b = write(tmp_path, "b.txt.gz", gzip.compress(b"two\r\n"))
    assert read_texts([a, b]) == "one\ntwo\n"
    assert read_texts(a) == "one\n"
    with pytest.raises(UsageError):
        read_texts([])


# ------------------------------------------------------------------------------------- vocabulary

def test_vocab_is_sorted_by_code_point_and_independent_of_text_order():
    text = "zebra \u00e9t\u00e9 \u6f22\u5b57 \U0001F600 ABC\n"
    v = Vocab.build(text)
    assert v.chars == sorted(set(text))
    assert [ord(c) for c in v.chars] == sorted(ord(c) for c in set(text))
    assert Vocab.build("".join(reversed(text))) == v
    assert v.unk_id is None and v.dtype == np.uint16 and len(v) == len(set(text))
    assert "z" in v and "q" not in v


def test_vocab_is_identical_across_processes_with_different_hash_seeds():
    code = "from charrnn.corpus import Vocab; print(Vocab.build('the quick brown fox \\u00e9').to_json())"
    outputs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        outputs.add(run.stdout)
    assert len(outputs) == 1


def test_cap_keeps_most_frequent_ties_by_code_point_and_adds_unk():
    # counts: c 4, a 2, b 2, d 1, e 1 -> keep c, then a (ties with b, lower code point), + <unk>
    v = Vocab.build("ccccabbade", max_size=3)
    assert v.chars == ["a", "c", Vocab.UNK]
    assert v.unk_id == 2
    ids = v.encode("abcde", on_unknown="unk")
    np.testing.assert_array_equal(ids, [0, 2, 1, 2, 2])
    assert v.decode(ids) == "a\ufffdc\ufffd\ufffd"


def test_cap_not_reached_means_no_unk():
    v = Vocab.build("abcabc", max_size=3)
    assert v.chars == ["a", "b", "c"] and v.unk_id is None
    for bad in (1, 0, 2.5, True):
        with pytest.raises(UsageError, match="max_size"):
            Vocab.build("abc", max_size=bad)
    with pytest.raises(CharRNNError):
        Vocab.build("")


def test_dtype_switches_to_uint32_above_65535_tokens():
    # Supplementary-plane code points: no surrogates, one character each.
    big_text = "".join(map(chr, range(0x10000, 0x10000 + 65536)))
    big = Vocab.build(big_text)
    assert len(big) == 65536 and big.dtype == np.uint32
    ids = big.encode(big_text[::-1])
    assert ids.dtype == np.uint32 and int(ids[0]) == 65535
    assert big.decode(ids) == big_text[::-1]
    small = Vocab.build(big_text[:65535])
    assert small.dtype == np.uint16 and small.encode(big_text[:65535]).dtype == np.uint16


def test_encode_decode_round_trip():
    text = "Hello, w\u00f6rld!\n\u6625\u7720\u4e0d\u89ba\u66c9\U0001F600\t"
    v = Vocab.build(text)
    ids = v.encode(text)
    assert ids.dtype == np.uint16 and ids.shape == (len(text),)
    np.testing.assert_array_equal(ids, [v.index[c] for c in text])
    assert v.decode(ids) == text
    assert v.decode(list(ids[:5])) == text[:5]
    assert v.decode([]) == "" and v.encode("").shape == (0,)


def test_on_unknown_modes():
    v = Vocab.build("abc")
    with pytest.raises(CharRNNError, match=r"2 character\(s\) not in the vocabulary: 'x', 'z'"):
        v.encode("axbz")
    with pytest.raises(CharRNNError, match="no <unk>"):
        v.encode("axbz", on_unknown="unk")
    np.testing.assert_array_equal(v.encode("axbz\n", on_unknown="drop"), [0, 1])
    with pytest.raises(UsageError, match="error, unk, drop"):
        v.encode("abc", on_unknown="ignore")
    assert v.missing("zaxb\nx") == ["\n", "x", "z"]


def test_unknown_error_lists_only_the_first_20():
    v = Vocab.build("a")
    unknown = "".join(chr(c) for c in range(ord("A"), ord("A") + 26))
    with pytest.raises(CharRNNError) as info:
        v.encode(unknown)
    message = str(info.value)
    assert "'T'" in message and "'U'" not in message and "and 6 more" in message and "\n" not in message


def test_decode_rejects_out_of_range_ids():
    v = Vocab.build("ab")
    with pytest.raises(CharRNNError, match="id 2 is out of range"):
        v.decode([0, 2])
    with pytest.raises(CharRNNError, match="id -1 is out of range"):
        v.decode(np.array([-1]))


def test_json_round_trip_with_plain_types():
    v = Vocab.build("hello world \u00e9\n", max_size=5)
    obj = v.to_json()
    assert type(obj) is list and all(type(c) is str for c in obj)
    assert Vocab.from_json(json.loads(json.dumps(obj))) == v


def test_from_json_keeps_the_given_id_order():
    v = Vocab.from_json(["b", "a", "\u00e9"])
    np.testing.assert_array_equal(v.encode("ab\u00e9"), [1, 0, 2])
    assert v.decode([2, 0]) == "\u00e9b"


@pytest.mark.parametrize("obj, match", [
    ("abc", "list"),
    ([], "empty"),
    (["a", 1], "entry 1"),
    (["a", "bc"], "entry 1 is 'bc'"),
    (["a", "a"], "twice"),
    ([Vocab.UNK, "a"], "only be last"),
])
def test_from_json_rejects_malformed(obj, match):
    with pytest.raises(CharRNNError, match=match):
        Vocab.from_json(obj)


# ------------------------------------------------------------------------------------- split

def test_split_is_contiguous_tail():
    ids = np.arange(100, dtype=np.uint16)
    train, val = split(ids, 0.1)
    np.testing.assert_array_equal(train, np.arange(90))
    np.testing.assert_array_equal(val, np.arange(90, 100))
    train, val = split(ids, 0.0)
    assert len(train) == 100 and len(val) == 0


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), "0.1", True])
def test_split_rejects_bad_fraction(bad):
    with pytest.raises(UsageError, match="val_fraction"):
        split(np.arange(100), bad)


def test_split_too_small_validation_part():
    with pytest.raises(CharRNNError, match="val_fraction"):
        split(np.arange(10), 0.1)


# ------------------------------------------------------------------------------------- batches

def test_batch_stream_layout_shift_and_last_target():
    ids = np.arange(1000, dtype=np.uint16)  # id == position, so positions can be read off
    B, T = 4, 7
    stream = BatchStream(ids, B, T)
    rows = (1000 - 1) // B  # 249
    assert stream.windows_per_epoch == rows // T == 35
    for k in range(stream.windows_per_epoch):
        x, y = stream.window(k)
        assert x.shape == y.shape == (B, T)
        assert x.dtype.kind == y.dtype.kind == "i"
        assert x.flags.c_contiguous and y.flags.c_contiguous
        # rows are contiguous chunks of the text, in order, never shuffled
        np.testing.assert_array_equal(x, np.arange(B)[:, None] * rows + k * T + np.arange(T))
        np.testing.assert_array_equal(y, x + 1)
        if k + 1 < stream.windows_per_epoch:
            np.testing.assert_array_equal(y[:, -1], stream.window(k + 1)[0][:, 0])


def test_batch_stream_last_column_targets_the_next_row():
    ids = np.array([5, 1, 4, 2, 3, 0, 6], dtype=np.uint16)
    x, y = BatchStream(ids, 2, 3).window(0)
    np.testing.assert_array_equal(x, [[5, 1, 4], [2, 3, 0]])
    np.testing.assert_array_equal(y, [[1, 4, 2], [3, 0, 6]])


def test_batch_stream_too_short():
    BatchStream(np.arange(13), 3, 4)  # exactly B * T + 1 = 13 is enough
    with pytest.raises(CharRNNError, match="needs at least 13.*smaller batch_size or seq_len"):
        BatchStream(np.arange(12), 3, 4)


@pytest.mark.parametrize("B, T, match", [(0, 4, "batch_size"), (2, 0, "seq_len"), (2.0, 4, "batch_size")])
def test_batch_stream_validates_sizes(B, T, match):
    with pytest.raises(UsageError, match=match):
        BatchStream(np.arange(100), B, T)


def test_batch_stream_window_out_of_range():
    stream = BatchStream(np.arange(100), 2, 10)
    with pytest.raises(CharRNNError, match="out of range"):
        stream.window(stream.windows_per_epoch)


@pytest.mark.parametrize("n, B, T", [(2, 1, 1), (101, 4, 7), (100, 4, 7), (11, 4, 3), (6, 8, 2),
                                     (50, 3, 100)])
def test_eval_batches_cover_every_target_exactly_once(n, B, T):
    rng = np.random.default_rng(n)
    ids = rng.integers(0, 50, size=n).astype(np.uint16)
    batches = list(eval_batches(ids, B, T))
    for x, y, mask in batches:
        assert x.shape == y.shape == mask.shape and x.shape[0] == B and 1 <= x.shape[1] <= T
        assert mask.dtype == bool and x.dtype.kind == y.dtype.kind == "i"
    X, Y, M = (np.concatenate([b[i] for b in batches], axis=1) for i in range(3))
    # Rows are contiguous chunks in order: reading the masked entries row by row gives the text.
    np.testing.assert_array_equal(Y[M], ids[1:])
    np.testing.assert_array_equal(X[M], ids[:-1])
    assert M.sum() == n - 1
    # Padding only ever follows the real pairs of a row, so carried state is never polluted.
    assert np.all(M[:, :-1] >= M[:, 1:])


def test_eval_batches_validates():
    with pytest.raises(CharRNNError, match="at least 2"):
        eval_batches(np.arange(1), 2, 3)
    with pytest.raises(UsageError, match="seq_len"):
        eval_batches(np.arange(10), 2, 0)
