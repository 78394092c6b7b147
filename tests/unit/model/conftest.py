"""One torch thread for the model tests. On this 2-core machine, shared with a Celery worker, a browser or another
test session, torch's second intra-op thread mostly waits for a core: tests/unit/model took 20-23 s with one
thread and 82-127 s with two (measured back to back at load average 5). Results are deterministic either way."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
