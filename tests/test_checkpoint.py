"""Checkpoint files: exact round trip, atomic replacement, refusal of damaged or unsafe files."""

import errno
import json
import os
import pathlib
import pickle

import numpy as np
import pytest

from charrnn.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from charrnn.errors import CharRNNError


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "layers.0.Wx": rng.standard_normal((5, 12)).astype(np.float32),
        "head.b": rng.standard_normal(7),  # float64
        "optim.step": np.array(42, dtype=np.int64),  # 0-d
        "optim.lr": np.array(1.5e-3),  # 0-d float64
        "state.0.h": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "ids": np.arange(10, dtype=np.uint16),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def sample_meta():
    return {"step": 42, "vocab": ["\n", " ", "a", "春", "<unk>"], "best_val_loss": float("inf"),
            "config": {"model": {"cell": "lstm", "hidden_size": 4}}, "notes": None}


def assert_one_line_naming(exc_info, path):
    message = str(exc_info.value)
    assert str(path) in message
    assert "\n" not in message


def test_round_trip_keeps_every_array_and_meta(tmp_path):
    path = tmp_path / "ckpt.npz"
    arrays, meta = sample_arrays(), sample_meta()
    save_checkpoint(path, arrays, meta)
    loaded, loaded_meta = load_checkpoint(path)
    assert sorted(loaded) == sorted(arrays)
    for name, array in arrays.items():
        assert type(loaded[name]) is np.ndarray
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array)
    assert loaded_meta == {**meta, "format_version": FORMAT_VERSION}
    assert "format_version" not in meta  # the caller's dict is left alone


def test_numpy_scalars_in_meta_become_json_numbers(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {}, {"loss": np.float32(1.5), "step": np.int64(3)})
    _, meta = load_checkpoint(path)
    assert meta["loss"] == 1.5 and meta["step"] == 3
    assert type(meta["step"]) is int


def test_file_is_a_plain_npz_with_json_meta(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"w": np.ones(3)}, {"step": 1})
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["meta", "w"]
        assert npz["meta"].shape == () and npz["meta"].dtype.kind == "U"
        assert json.loads(str(npz["meta"][()])) == {"step": 1, "format_version": FORMAT_VERSION}


def test_saving_again_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "last.npz"
    save_checkpoint(path, {"w": np.zeros(2)}, {"step": 1})
    save_checkpoint(path, {"w": np.ones(2)}, {"step": 2})
    arrays, meta = load_checkpoint(path)
    np.testing.assert_array_equal(arrays["w"], np.ones(2))
    assert meta["step"] == 2
    assert os.listdir(tmp_path) == ["last.npz"]


def failing_savez(fh, **arrays):
    fh.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def failing_replace(src, dst):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def failing_fsync(fd):
    raise OSError(errno.EIO, os.strerror(errno.EIO))


@pytest.mark.parametrize("target, replacement", [
    (np, ("savez", failing_savez)),
    (os, ("fsync", failing_fsync)),
    (os, ("replace", failing_replace)),
])
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, target, replacement):
    path = tmp_path / "last.npz"
    save_checkpoint(path, {"w": np.arange(4.0)}, {"step": 1})
    before = path.read_bytes()
    monkeypatch.setattr(target, *replacement)
    with pytest.raises(CharRNNError) as exc_info:
        save_checkpoint(path, {"w": np.zeros(4)}, {"step": 2})
    monkeypatch.undo()
    assert_one_line_naming(exc_info, path)
    assert "cannot write" in str(exc_info.value)
    assert "previous checkpoint is intact" in str(exc_info.value)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.npz"]
    assert load_checkpoint(path)[1]["step"] == 1


def test_interrupted_write_removes_the_temporary_and_propagates(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    save_checkpoint(path, {"w": np.arange(4.0)}, {"step": 1})
    before = path.read_bytes()

    def interrupted(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": np.zeros(4)}, {"step": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.npz"]


def test_write_into_missing_directory_is_a_charrnn_error(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "last.npz"
    with pytest.raises(CharRNNError) as exc_info:
        save_checkpoint(path, {"w": np.zeros(1)}, {})
    assert_one_line_naming(exc_info, path)


@pytest.mark.parametrize("arrays, meta", [
    ({"bad": np.array([{"a": 1}], dtype=object)}, {}),
    ({"meta": np.zeros(1)}, {}),
    ({"file": np.zeros(1)}, {}),
    ({"": np.zeros(1)}, {}),
    ({"w": np.zeros(1)}, {"not json": object()}),
    ({"w": np.zeros(1)}, ["not", "a", "dict"]),
])
def test_programmer_errors_are_refused_before_writing(tmp_path, arrays, meta):
    path = tmp_path / "ckpt.npz"
    with pytest.raises(ValueError):
        save_checkpoint(path, arrays, meta)
    assert os.listdir(tmp_path) == []


class MarkerOnUnpickle:
    """Unpickling an instance creates `marker`: proof of whether a pickle was executed."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def write_pickle_npz(path, marker):
    payload = np.empty(1, dtype=object)
    payload[0] = MarkerOnUnpickle(marker)
    meta = np.array(json.dumps({"format_version": FORMAT_VERSION}))
    np.savez(path, meta=meta, payload=payload, allow_pickle=True)


def test_pickle_fixture_really_runs_code_when_unpickled(tmp_path):
    # guards the next test: it must hold a payload that would have had an effect
    path, marker = tmp_path / "evil.npz", tmp_path / "marker"
    write_pickle_npz(path, marker)
    with np.load(path, allow_pickle=True) as npz:
        npz["payload"]
    assert marker.exists()


def test_pickled_object_array_is_refused_without_running_it(tmp_path):
    path, marker = tmp_path / "evil.npz", tmp_path / "marker"
    write_pickle_npz(path, marker)
    with pytest.raises(CharRNNError) as exc_info:
        load_checkpoint(path)
    assert_one_line_naming(exc_info, path)
    assert "pickled objects; refusing to load" in str(exc_info.value)
    assert not marker.exists()


def test_a_plain_pickle_file_is_refused_without_running_it(tmp_path):
    path, marker = tmp_path / "evil.npz", tmp_path / "marker"
    path.write_bytes(pickle.dumps(MarkerOnUnpickle(marker)))
    with pytest.raises(CharRNNError) as exc_info:
        load_checkpoint(path)
    assert_one_line_naming(exc_info, path)
    assert not marker.exists()


@pytest.fixture
def good_bytes(tmp_path):
    path = tmp_path / "good.npz"
    save_checkpoint(path, sample_arrays(), sample_meta())
    return path.read_bytes()


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file_is_refused(tmp_path, good_bytes, keep):
    path = tmp_path / "cut.npz"
    path.write_bytes(good_bytes[: max(4, int(len(good_bytes) * keep))])
    with pytest.raises(CharRNNError) as exc_info:
        load_checkpoint(path)
    assert_one_line_naming(exc_info, path)


def test_corrupt_array_header_is_refused(tmp_path, good_bytes):
    path = tmp_path / "corrupt.npz"
    # break the magic string of the first stored .npy member but keep the zip directory valid
    at = good_bytes.index(b"\x93NUMPY")
    path.write_bytes(good_bytes[:at] + b"garbage" + good_bytes[at + 7:])
    with pytest.raises(CharRNNError) as exc_info:
        load_checkpoint(path)
    assert_one_line_naming(exc_info, path)


def test_flipped_data_byte_is_caught_by_the_zip_checksum(tmp_path, good_bytes):
    path = tmp_path / "rotten.npz"
    damaged = bytearray(good_bytes)
    # a byte inside the first array's data, past its .npy header
    damaged[good_bytes.index(b"\x93NUMPY") + 200] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(CharRNNError) as exc_info:
        load_checkpoint(path)
    assert_one_line_naming(exc_info, path)


@pytest.mark.parametrize("content", [b"", b"hello, world\n", b"\x00" * 100])
def test_not_a_zip_is_refused(tmp_path, content):
    path = tmp_path / "plain.npz"
    path.write_bytes(content)
    with pytest.raises(CharRNNError) as exc_info:
        load_checkpoint(path)
    assert_one_line_naming(exc_info, path)
    assert "not an .npz" in str(exc_info.value)


def test_a_bare_npy_file_is_refused(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.ones(3))
    with pytest.raises(CharRNNError) as exc_info:
        load_checkpoint(path)
    assert_one_line_naming(exc_info, path)


def test_missing_file_and_directory_are_refused(tmp_path):
    for path in (tmp_path / "missing.npz", tmp_path):
        with pytest.raises(CharRNNError) as exc_info:
            load_checkpoint(path)
        assert_one_line_naming(exc_info, path)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("meta, expected", [
    (None, "no 'meta' entry"),
    (np.array("{not json"), "not valid JSON"),
    (np.array('["a", "list"]'), "not a JSON object"),
    (np.array(3), "not a JSON string"),
    (np.array(["{}", "{}"]), "not a JSON string"),
    (np.array("{}"), "no format_version"),
    (np.array('{"format_version": "1"}'), "unknown checkpoint format '1'"),
    (np.array('{"format_version": true}'), "unknown checkpoint format True"),
    (np.array('{"format_version": 0}'), "unknown checkpoint format 0"),
    (np.array('{"format_version": 3}'),
     "written by a newer charrnn (format 3); this version reads formats 1 to 2"),
])
def test_bad_meta_is_refused(tmp_path, meta, expected):
    arrays = {"w": np.zeros(2)} if meta is None else {"w": np.zeros(2), "meta": meta}
    path = write_npz(tmp_path / "ckpt.npz", **arrays)
    with pytest.raises(CharRNNError) as exc_info:
        load_checkpoint(path)
    assert_one_line_naming(exc_info, path)
    assert expected in str(exc_info.value)


def test_load_reads_everything_before_returning(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"w": np.arange(3.0)}, {})
    arrays, _ = load_checkpoint(path)
    # overwrite in place: anything still read lazily from the file would now see zeros
    path.write_bytes(bytes(path.stat().st_size))
    np.testing.assert_array_equal(arrays["w"], np.arange(3.0))
