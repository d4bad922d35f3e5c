"""The summarization study's quick mode, as `make experiments-quick` runs it."""
import pytest

from experiments import summarization_study
from tests.experiments import quick_study

pytestmark = pytest.mark.slow


def test_quick_summarization_study_runs_every_row(tmp_path):
  quick_study.check_quick_study(summarization_study, tmp_path)
