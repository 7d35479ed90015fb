"""The long-running commands fix glibc's mmap threshold, so freed large buffers go back to the system."""

from __future__ import annotations

import platform

import pytest

from funasr_nano.cli.memory import return_large_buffers


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_threshold_is_set_on_glibc():
    assert return_large_buffers() is True
