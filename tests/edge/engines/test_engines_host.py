"""What the host offers the engines (edge.engines.host): the oneDNN cap for OpenVINO, CPU flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.engines import host
from edge.engines.host import cpu_flags
from edge.errors import EngineError

AVX512 = "avx512f" in cpu_flags()


def test_kernels_over_cap() -> None:
    counts = {"brgconv_avx512_amx_I8": 35, "brgconv_avx512_1x1_I8": 4, "jit_avx2_f32": 1, "ref_f32": 2}
    assert host.kernels_over_cap(counts, "avx512_core_bf16") == ["brgconv_avx512_amx_I8"]
    assert host.kernels_over_cap(counts, "avx512_core_vnni") == ["brgconv_avx512_amx_I8"]
    assert host.kernels_over_cap(counts, "avx2_vnni") == ["brgconv_avx512_1x1_I8", "brgconv_avx512_amx_I8"]
    assert host.kernels_over_cap({"jit_avx2_f32": 3, "ref_f32": 1}, "avx2") == []
    with pytest.raises(EngineError, match=r"'avx2' did not take effect \(kernels brgconv_avx512_1x1_I8"):
        host.check_cap(counts, "avx2", "m.xml")
    host.check_cap({"jit_avx2_f32": 3}, "avx2", "m.xml")
    assert host.summary({"b": 1, "a": 1, "c": 5}) == "c x5, a x1, b x1"


def test_apply_cap_sets_the_environment_and_refuses_another(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(host.ENV, raising=False)
    monkeypatch.delenv(host.OLD_ENV, raising=False)
    host.apply_cap("avx512_core_bf16")
    assert os.environ[host.ENV] == "AVX512_CORE_BF16"
    host.apply_cap("avx512_core_bf16")  # the same again: fine
    with pytest.raises(EngineError, match="conflicts with ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16"):
        host.apply_cap("avx2")
    monkeypatch.delenv(host.ENV)
    monkeypatch.setenv(host.OLD_ENV, "avx2")
    with pytest.raises(EngineError, match="DNNL_MAX_CPU_ISA=avx2"):
        host.apply_cap("avx512_core")


def test_config_field() -> None:
    pytest.importorskip("openvino")
    from edge.engines.openvino import OpenVinoEngineConfig

    assert OpenVinoEngineConfig(model="m.onnx").max_cpu_isa is None
    assert OpenVinoEngineConfig(model="m.onnx", max_cpu_isa="avx512_core_bf16").max_cpu_isa == "avx512_core_bf16"
    with pytest.raises(ValidationError, match="max_cpu_isa"):
        OpenVinoEngineConfig(model="m.onnx", max_cpu_isa="amx")  # type: ignore[arg-type]


_KERNELS_SCRIPT = """
import json, sys
from pathlib import Path
from edge.engines.openvino import OpenVinoEngineConfig
cap = sys.argv[2] or None
engine = OpenVinoEngineConfig(model=sys.argv[1], num_threads=1, warmup=1, max_cpu_isa=cap).build(Path("."))
engine.load()
print(json.dumps(engine.kernels))
"""


def _kernels_in_fresh_process(model: Path, cap: str, env: dict[str, str]) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _KERNELS_SCRIPT, str(model), cap],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(not AVX512, reason="the CPU has no AVX-512: capping it at AVX2 would change nothing")
def test_cap_changes_the_kernels_of_a_fresh_process(model_path: Path, repo_root: Path) -> None:
    """A real OpenVINO compile in a new process: uncapped it runs AVX-512 kernels, capped at AVX2 none."""
    pytest.importorskip("openvino")
    env = {k: v for k, v in os.environ.items() if k not in (host.ENV, host.OLD_ENV)}
    env["PYTHONPATH"] = str(repo_root)
    native = _kernels_in_fresh_process(model_path, "", env)
    capped = _kernels_in_fresh_process(model_path, "avx2", env)
    assert any("avx512" in k for k in native), native
    assert capped and not host.kernels_over_cap(capped, "avx2"), capped
    assert sum(capped.values()) == sum(native.values())  # the same layers, other kernels


@pytest.mark.skipif(not AVX512, reason="the CPU has no AVX-512: an AVX2 cap cannot be seen to fail")
def test_cap_after_an_uncapped_compile_is_an_error(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """oneDNN reads the cap once per process: asked for too late, the engine says so instead of running uncapped."""
    pytest.importorskip("openvino")
    from edge.engines.openvino import OpenVinoEngineConfig

    monkeypatch.delenv(host.ENV, raising=False)
    monkeypatch.delenv(host.OLD_ENV, raising=False)
    first = OpenVinoEngineConfig(model=str(model_path), num_threads=1, warmup=0).build(Path("."))
    first.load()  # fixes this process's instruction set, uncapped
    try:
        assert any("avx512" in k for k in first.kernels)
        late = OpenVinoEngineConfig(model=str(model_path), num_threads=1, warmup=0, max_cpu_isa="avx2").build(Path("."))
        with pytest.raises(EngineError, match="did not take effect"):
            late.load()
    finally:
        first.close()
