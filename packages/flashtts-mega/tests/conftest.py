"""Fixtures the Mega model tests share: one torch thread, and tiny checkpoints written by project code."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    # The test machine's cores are shared (other suites, server subprocesses): OpenMP threads that
    # spin-wait for busy cores make these small models and their many decode steps crawl.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Callable[[str, Callable[[Path], object]], Path]:
    """`tiny_checkpoint(name, write)`: a fresh folder named `name`, filled by `write(folder)`."""

    def make(name: str, write: Callable[[Path], object]) -> Path:
        folder = tmp_path_factory.mktemp("mega") / name
        write(folder)
        return folder

    return make
