from pathlib import Path

import pytest
from click.testing import CliRunner

from charrnn.checkpoint import load_checkpoint
from charrnn.cli import cli


@pytest.fixture(autouse=True, scope="session")
def _corpus_cache_in_a_scratch_directory(tmp_path_factory):
    """Runs of the suite (and the CLI children it starts) cache encoded corpora in a directory of
    their own, never in the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def assert_resumes():
    """check(run_dir): the run stopped at step >= 3 and `--resume` takes it two steps further."""

    def check(run_dir: Path) -> None:
        checkpoint = run_dir / "last.npz"
        stopped = load_checkpoint(checkpoint)[1]["progress"]["step"]
        assert stopped >= 3
        result = CliRunner().invoke(cli, ["train", "--resume", str(checkpoint), "--set",
                                          f"train.max_steps={stopped + 2}", "--no-progress"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert load_checkpoint(checkpoint)[1]["progress"]["step"] == stopped + 2

    return check
