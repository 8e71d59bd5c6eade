"""Suite-wide set-up."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from throttlepool.sim import SimConfig, Simulator, SimulatorProcess

# A shell starts a background job (`scripts/test &`, a CI runner's job) with SIGINT ignored,
# and children inherit an ignored signal: the tests that press Ctrl-C on a child process
# (sim, run) would then wait forever. Our own handler is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    """One simulator per test module (a module may define its own ``sim`` instead)."""
    with Simulator(SimConfig()) as sim:
        yield sim


@pytest.fixture
def sim(shared_sim: Simulator) -> Simulator:
    """The module's simulator with its windows, stats and request log reset."""
    shared_sim.reset()
    return shared_sim


@pytest.fixture(scope="module")
def shared_sim_process() -> Iterator[SimulatorProcess]:
    """One simulator process per test module: a server with an interpreter of its own."""
    with SimulatorProcess(SimConfig()) as sim:
        yield sim


@pytest.fixture
def remote_sim(shared_sim_process: SimulatorProcess) -> SimulatorProcess:
    """The module's simulator process, reset; for tests that time the server's count (a
    server in the client's process stamps requests late while client threads hold its
    interpreter lock, which no real server does)."""
    shared_sim_process.configure(**SimConfig().to_dict())  # no limit left by another test
    shared_sim_process.reset()
    return shared_sim_process
