"""Markers of the network tests."""


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'parity: compares with Hugging Face transformers (needs torch and '
      'transformers from requirements-test.txt)')
