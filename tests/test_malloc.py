"""glibc's malloc as the zoo command sets it for its own process (zoo/_malloc.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="glibc's malloc",
)

# Frees a 16 MiB block (glibc then raises its mmap threshold past 8 MiB), then allocates,
# touches and frees an 8 MiB one: prints how much of it the process still holds.
_RETAINED = textwrap.dedent(
    """
    import ctypes, sys
    from zoo._malloc import give_back_large_frees
    if sys.argv[1] == "set":
        assert give_back_large_frees()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    def touch_and_free(n):
        p = libc.malloc(n)
        ctypes.memset(p, 1, n)
        libc.free(p)
    touch_and_free(16 << 20)
    before = rss()
    touch_and_free(8 << 20)
    print(rss() - before)
    """
)


def _retained(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", _RETAINED, mode], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@glibc
def test_a_freed_large_block_goes_back_to_the_system():
    """Without the setting glibc keeps a freed 8 MiB block once it has freed a larger
    one; with it, the block is unmapped when freed."""
    assert _retained("default") >= 4 << 20
    assert _retained("set") < 1 << 20


@glibc
def test_a_threshold_the_user_chose_is_kept(monkeypatch):
    from zoo._malloc import give_back_large_frees

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert give_back_large_frees() is False


def test_the_commands_that_stream_weights_set_it_and_the_others_do_not(
    registry, tiny_dir, run_cli, monkeypatch
):
    import zoo._malloc

    calls: list[int] = []
    monkeypatch.setattr(zoo._malloc, "give_back_large_frees", lambda: calls.append(1))
    code, _, _ = run_cli("ls")
    assert code == 0 and calls == []
    code, _, err = run_cli("import", str(tiny_dir("bert")))
    assert code == 0 and calls == [1], err
    code, _, err = run_cli("verify")
    assert code == 0 and calls == [1, 1], err
