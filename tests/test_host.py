"""Host checks: the warning for bf16 on a CPU without bf16 units, read from /proc/cpuinfo."""

from __future__ import annotations

import logging

import pytest

from sslkit.run.host import cpu_bf16_warning, cpu_flags, warn_if_bf16_emulated

# /proc/cpuinfo of an x86 CPU with AVX2 only, and with AVX-512 BF16 (one core shown each).
AVX2_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 fma bmi2
bugs\t\t: spectre_v1
"""
BF16_CPUINFO = AVX2_CPUINFO.replace("avx2 fma", "avx2 fma avx512f avx512_bf16")
AMX_CPUINFO = AVX2_CPUINFO.replace("avx2 fma", "avx2 fma avx512f amx_bf16 amx_tile")
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\n"


def test_cpu_flags_reads_the_flags_line():
    flags = cpu_flags(BF16_CPUINFO)
    assert {"avx2", "avx512_bf16"} <= flags and "bugs" not in flags and "spectre_v1" not in flags
    assert cpu_flags(ARM_CPUINFO) is None


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true", "bf16"])
@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_bf16_on_a_cpu_without_bf16_units_names_the_missing_features(precision, accelerator):
    message = cpu_bf16_warning(precision, accelerator, AVX2_CPUINFO, cuda_available=False)
    assert message == (
        f"trainer.precision={precision} on a CPU without avx512_bf16 or amx_bf16 runs slower "
        "than 32-true (bf16 is emulated); use trainer.precision=32-true on this machine"
    )


@pytest.mark.parametrize("cpuinfo", [BF16_CPUINFO, AMX_CPUINFO])
def test_bf16_on_a_cpu_with_bf16_units_says_nothing(cpuinfo):
    assert cpu_bf16_warning("bf16-mixed", "cpu", cpuinfo) is None


@pytest.mark.parametrize("precision", ["32-true", 32, "16-mixed", "64-true"])
def test_other_precisions_say_nothing(precision):
    assert cpu_bf16_warning(precision, "cpu", AVX2_CPUINFO) is None


@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "mps"])
def test_bf16_on_an_accelerator_says_nothing(accelerator):
    assert cpu_bf16_warning("bf16-mixed", accelerator, AVX2_CPUINFO) is None


def test_auto_accelerator_with_cuda_says_nothing():
    assert cpu_bf16_warning("bf16-mixed", "auto", AVX2_CPUINFO, cuda_available=True) is None


def test_a_cpu_without_x86_flags_cannot_be_checked_and_says_nothing():
    assert cpu_bf16_warning("bf16-mixed", "cpu", ARM_CPUINFO) is None
    assert cpu_bf16_warning("bf16-mixed", "cpu", "") is None


def test_warn_if_bf16_emulated_logs_the_message(monkeypatch, caplog):
    monkeypatch.setattr("sslkit.run.host._read_cpuinfo", lambda: AVX2_CPUINFO)
    with caplog.at_level(logging.WARNING, logger="sslkit.run.host"):
        message = warn_if_bf16_emulated("bf16-mixed", "cpu")
        assert warn_if_bf16_emulated("32-true", "cpu") is None
    assert message is not None and "avx512_bf16 or amx_bf16" in message
    assert [record.getMessage() for record in caplog.records] == [message]


def test_building_a_bf16_cpu_trainer_warns(hydra_run, tmp_path, monkeypatch, caplog):
    from sslkit.build import StoreConfig, build_trainer
    from tests.conftest import TINY

    monkeypatch.setattr("sslkit.run.host._read_cpuinfo", lambda: AVX2_CPUINFO)
    cfg = hydra_run("train", [*TINY, "trainer=cpu", "trainer.precision=bf16-mixed"])
    with caplog.at_level(logging.WARNING, logger="sslkit.run.host"):
        build_trainer(cfg, tmp_path, logger=None, store_config=StoreConfig(cfg))
    warnings = [r.getMessage() for r in caplog.records if r.name == "sslkit.run.host"]
    assert len(warnings) == 1 and "without avx512_bf16 or amx_bf16" in warnings[0]
