"""Each test starts from an empty gin config: bindings parsed by one test (e.g.
finetune's RestoreCheckpointConfig.strict = False) must not reach the next."""
import gin
import pytest


@pytest.fixture(autouse=True)
def clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()
