"""tests/conftest.py's selection: plain `pytest` leaves the tests marked slow out, `-m` chooses, and a
run of only slow tests runs them rather than ending with pytest's exit code 5 (no tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py").read_text(encoding="utf-8")
TESTS = {
    "test_quick.py": "def test_quick():\n    pass\n",
    "test_heavy.py": "import pytest\n\n@pytest.mark.slow\ndef test_heavy():\n    pass\n",
}


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n    atari: atari\n")
    pytester.makepyfile(**{name[:-3]: text for name, text in TESTS.items()})
    return pytester


def test_plain_pytest_leaves_the_slow_tests_out(suite):
    suite.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1, deselected=1)


def test_a_mark_expression_chooses_and_slow_or_not_slow_runs_everything(suite):
    suite.runpytest("-p", "no:cacheprovider", "-m", "slow or not slow").assert_outcomes(passed=2)
    suite.runpytest("-p", "no:cacheprovider", "-m", "slow").assert_outcomes(passed=1, deselected=1)


def test_naming_only_slow_tests_runs_them_instead_of_ending_with_no_tests(suite):
    result = suite.runpytest("-p", "no:cacheprovider", "test_heavy.py")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
