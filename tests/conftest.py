"""Shared test helpers.

Real challenge fixtures live in ``../shared/fixtures`` beside the checkout (CI has it); a user's
clone does not, so tests that need them skip with a reason, and the project's own small test data
under ``tests/data`` covers the same code paths.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
TEST_DATA = Path(__file__).resolve().parent / "data"


def shared_fixture(*parts: str) -> Path:
    """Path of a file or folder under ../shared/fixtures, or skip the calling test with the reason."""
    path = SHARED_FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"challenge fixture {path} is absent: ../shared/fixtures exists only beside the CI and "
            "developer checkouts; the tests on tests/data cover the same code in a plain clone"
        )
    return path


@pytest.fixture
def shared_fixtures() -> Path:
    return shared_fixture()


@pytest.fixture
def real_tokenizer_path() -> Path:
    return shared_fixture("tokenizers", "fineweb_1024_bpe.model")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory):
    """The embedded demo corpus, built once per test session (a few seconds, offline)."""
    from golf.corpus import build_demo

    return build_demo(tmp_path_factory.mktemp("demo"), quiet=True)


SMALL_EXPERIMENT = TEST_DATA / "sweeps" / "experiment_qat_small"


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    """A copy of a small real experiment directory (2 configs x 3 seeds, one trial errored)."""
    import shutil

    target = tmp_path / "qat_small"
    shutil.copytree(SMALL_EXPERIMENT, target)
    return target


@pytest.fixture
def restore_value_sources():
    """`sweeps compare`'s value-source registry is process-wide: put it back after the test."""
    from sweeps import stats

    saved = list(stats.VALUE_SOURCES)
    yield
    stats.VALUE_SOURCES[:] = saved
