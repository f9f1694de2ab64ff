import functools

import pytest

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def ray_cluster():
    """A fresh local Ray (never one a developer left running) with room for many replicas."""
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=16, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def fake_engine():
    """The fake engine factory, emitting a token every ``time_per_token_s``."""
    from kaon.engine.fake import FakeEngine

    return lambda time_per_token_s: functools.partial(FakeEngine, time_per_token_s=time_per_token_s)
