"""The contention judgement of bench/notebooks.py (issue 28), on synthetic CPU samples: fast, and independent of the
machine's actual load. A sample is cumulative seconds `(t, machine busy, machine total, our process tree)`."""
import subprocess, sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import notebooks as B  # noqa: E402

CORES, DT = 2, 0.5


def samples(phases, background=0.01):
    """Cumulative samples every DT s on CORES cores from `phases`: (seconds, cores used by others, cores used by us);
    `background` cores of others (kernel threads, daemons) throughout."""
    t = busy = total = ours = 0.0; out = [(t, busy, total, ours)]
    for secs, others, mine in phases:
        for _ in range(round(secs / DT)):
            t += DT; total += CORES * DT; ours += mine * DT; busy += min(CORES, others + background + mine) * DT
            out.append((t, busy, total, ours))
    return out


def test_idle_is_clean():
    u = B.cpu_usage(samples([(120, 0, 2)]), CORES)
    assert u["cpu_share"] == pytest.approx(1.0, abs=0.01) and u["others_busy"] < 0.01 and u["contended"] is False
    # a notebook that mostly waits (I/O, sleeps, one thread) gets a small share on an idle machine: still clean
    u = B.cpu_usage(samples([(60, 0, 0.1), (60, 0, 1)]), CORES)
    assert u["cpu_share"] == pytest.approx(0.275, abs=0.01) and u["contended"] is False


def test_steady_load_is_contended():
    u = B.cpu_usage(samples([(120, 1, 1)]), CORES)   # a 1-core hog all along: the notebook gets one core of two
    assert u["others_busy"] == pytest.approx(0.5, abs=0.01) and u["cpu_share"] == pytest.approx(0.5) and u["contended"] is True


def test_load_that_comes_and_goes_during_the_run():
    "Idle at both ends (where the reference matmul is timed), loaded in the middle: caught by the sampled others_busy."
    u = B.cpu_usage(samples([(40, 0, 2), (60, 1.5, 0.5), (100, 0, 2)]), CORES)
    assert u["others_busy"] == pytest.approx(60 * 1.5 / 2 / 200, abs=0.01) and u["contended"] is True
    assert u["others_peak"] == pytest.approx(0.75, abs=0.01)
    # a short burst: a peak, but too little CPU over the run to push the time past the noise allowance
    u = B.cpu_usage(samples([(10, 0, 2), (5, 1, 1), (185, 0, 2)]), CORES)
    assert u["others_peak"] == pytest.approx(0.5, abs=0.01) and u["others_busy"] < B.OTHERS_BUSY_MAX and u["contended"] is False


def test_threshold():
    "OTHERS_BUSY_MAX is a fraction of the whole machine (0.10 of 2 cores = 0.2 cores on average)."
    assert B.OTHERS_BUSY_MAX == 0.10
    assert B.cpu_usage(samples([(100, 0.17, 1.8)], background=0), CORES)["contended"] is False
    assert B.cpu_usage(samples([(100, 0.23, 1.7)], background=0), CORES)["contended"] is True


def test_unknown_and_old_rows():
    assert B.cpu_usage([], CORES)["contended"] is None and B.cpu_usage(samples([(0.5, 0, 2)])[:1], CORES)["contended"] is None
    old = dict(ref_s="0.093", ref_before_s="0.093", ref_after_s="0.094")   # a CSV from before the CPU columns
    assert B.contended(old) is None and B.contended(dict(old, others_busy="")) is None and B.contended(dict(old, others_busy="nan")) is None
    assert B.contended(dict(old, others_busy="0.02")) is False and B.contended(dict(old, others_busy="0.3")) is True


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")
def test_read_cpu_counts_a_finished_child():
    "A child that ran and was reaped between two samples still counts as ours (children_user/system)."
    a = B.read_cpu()
    subprocess.run([sys.executable, "-c", "import time\nwhile time.process_time() < 0.3: pass"], check=True)
    b = B.read_cpu()
    assert b[3] - a[3] >= 0.25 and b[2] > a[2] and b[0] > a[0]
