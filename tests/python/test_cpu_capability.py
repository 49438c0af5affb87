"""The automatic CPU capability (README, "CPU capabilities"): without FUSEDOPT_CPU_CAPABILITY a fresh
process uses the highest capability the CPU supports, and which ones it supports follows the CPU's
feature flags as Linux reports them (/proc/cpuinfo: an oracle independent of the library's cpuid)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

AVX2_FLAGS = {"avx2", "fma", "f16c"}
AVX512_FLAGS = AVX2_FLAGS | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}


def fresh_process_choice() -> tuple[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "FUSEDOPT_CPU_CAPABILITY"}
    code = ("import json, fusedopt as f; "
            "print(json.dumps([f.cpu_capability(), f.supported_cpu_capabilities()]))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    auto, supported = json.loads(proc.stdout.strip().splitlines()[-1])
    return auto, supported


def linux_cpu_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_automatic_choice_is_the_highest_supported_capability():
    auto, supported = fresh_process_choice()
    assert supported[0] == "baseline"
    assert auto == supported[-1]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")
def test_supported_capabilities_follow_the_cpu_flags():
    flags = linux_cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    auto, supported = fresh_process_choice()
    if "avx2" not in supported and not AVX2_FLAGS <= flags:
        return  # a CPU without AVX2: only baseline, whatever was compiled
    if "avx2" not in supported:
        pytest.skip("this build has no per-capability kernels (FUSEDOPT_CPU_DISPATCH=OFF)")
    assert AVX2_FLAGS <= flags, "avx2 offered on a CPU without AVX2+FMA+F16C"
    has512 = AVX512_FLAGS <= flags
    assert ("avx512" in supported) == has512, (supported, sorted(f for f in flags if "avx512" in f))
    assert auto == ("avx512" if has512 else "avx2")
