"""Shared test settings.

* Hypothesis runs derandomized (the same examples on every run and machine, so a CI failure
  reproduces locally), without a deadline (this 2-core CI machine is shared and slow), with a
  modest number of examples, and without writing an example database into the checkout.
  ``HYPOTHESIS_PROFILE=thorough`` runs many more examples, still reproducibly.
* Tests never reach the Hugging Face hub.
"""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import HealthCheck, settings

# Set before any test module imports transformers, which reads it at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

settings.register_profile(
    "course",
    deadline=None,
    derandomize=True,
    max_examples=25,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    parent=settings.get_profile("course"),
    max_examples=500,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "course"))


@pytest.fixture(scope="session")
def quiet_transformers():
    """Silence ``transformers``' logging (config and loading chatter) while tests that ask for
    it run; session-scoped so that module-scoped model fixtures can use it too."""
    import transformers

    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    logger = logging.getLogger("transformers")
    level = logger.level
    try:
        yield
    finally:
        transformers.logging.set_verbosity(before)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and a shared machine cannot stall an idle one.
    Modules that train tiny models use it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
