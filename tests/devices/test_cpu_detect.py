"""CPU-feature detection (`probscale-edge hardware`): this machine, given /proc/cpuinfo texts, and over ssh."""

from __future__ import annotations

import os
import stat

import pytest

from probscale_edge.errors import ProbscaleError


@pytest.mark.parametrize("text,arch,preset,warn", [
    ("processor: 0\nflags\t: fpu sse avx2 avx512f avx512_vnni\nmodel name: X\n", "x86_64", "avx512_vnni", False),
    ("processor: 0\nflags\t: fpu sse avx2 avx512f\n", "x86_64", "avx512", True),
    ("processor: 0\nflags\t: fpu sse avx2 avx_vnni\n", "x86_64", "x86_64", False),
    ("processor: 0\nflags\t: fpu sse avx2\n", "x86_64", "avx2", True),
    ("processor: 0\nflags\t: fpu sse sse2\n", "x86_64", "x86_64", True),
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp i8mm\nCPU implementer\t: 0x41\n", "aarch64",
     "arm64", False),
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32\nCPU implementer\t: 0x41\nCPU part\t: 0xd03\n",
     "aarch64", "arm64", True),  # Cortex-A53: no dot product
])
def test_detect_cpu_features(text, arch, preset, warn):
    from probscale_edge.devices import detect_cpu_features

    d = detect_cpu_features(text)
    assert d["arch"] == arch
    assert d["recommended_preset"] == preset
    assert bool(d["int8_warning"]) == warn
    if arch == "aarch64" and "i8mm" in text:
        assert d["features"]["asimddp"] and d["features"]["i8mm"]


def test_detect_cpu_features_local():
    from probscale_edge.devices import detect_cpu_features

    d = detect_cpu_features()
    assert d["arch"] in ("x86_64", "aarch64") or d["int8_warning"]
    assert d["recommended_preset"] in (None, "arm64", "avx2", "avx512", "avx512_vnni", "x86_64")


def _fake_ssh(tmp_path, monkeypatch, script: str):
    """A stand-in `ssh` on PATH (no sshd needed): it records its arguments and runs ``script``."""
    shim = tmp_path / "bin" / "ssh"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\n" f"printf '%s\\n' \"$@\" > {tmp_path / 'argv'}\n" + script)
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "argv"


def test_remote_cpu_features(tmp_path, monkeypatch):
    from probscale_edge.devices import remote_cpu_features

    argv = _fake_ssh(tmp_path, monkeypatch, "printf 'processor\\t: 0\\nFeatures\\t: fp asimd asimddp\\n"
                                            "CPU implementer\\t: 0x41\\n\\naarch64\\n'\n")
    d = remote_cpu_features("pi@device")
    assert d["arch"] == "aarch64" and d["features"]["asimddp"] and d["recommended_preset"] == "arm64"
    assert d["source"] == "given" and not d["int8_warning"]
    assert argv.read_text().split("\n")[:4] == ["-o", "BatchMode=yes", "pi@device", "cat /proc/cpuinfo; uname -m"]


def test_remote_cpu_features_failure_is_one_line(tmp_path, monkeypatch):
    from probscale_edge.devices import remote_cpu_features

    _fake_ssh(tmp_path, monkeypatch, "echo 'ssh: connect to host device port 22: Connection refused' >&2\nexit 255\n")
    with pytest.raises(ProbscaleError, match="could not read /proc/cpuinfo over ssh") as e:
        remote_cpu_features("pi@device")
    assert "\n" not in str(e.value) and "fix: check the host and your ssh key" in str(e.value)
    with pytest.raises(ProbscaleError, match="invalid ssh target"):
        remote_cpu_features("-oProxyCommand=true")
