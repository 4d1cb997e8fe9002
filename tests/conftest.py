from pathlib import Path

import pytest
from click.testing import CliRunner

from charrnn.checkpoint import load_checkpoint
from charrnn.cli import cli


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
