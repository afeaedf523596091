"""Process settings and the run metadata in config.json."""

import torch

from fedrl.runtime import machine, versions

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
stepping\t: 8
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile rdrand

processor\t: 1
model name\t: another CPU
"""


def test_machine_reads_the_first_processor_and_its_vector_isa(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    info = machine(str(path))
    assert info["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["cpu_id"] == "vendor_id GenuineIntel cpu family 6 model 143 stepping 8"
    assert info["cpu_isa"] == "amx_tile avx avx2 avx512_bf16 avx512f fma"
    assert info["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_machine_without_cpuinfo_still_names_the_cpu(tmp_path):
    info = machine(str(tmp_path / "missing"))
    assert info["cpu"] and info["cpu_id"] == "" and info["cpu_isa"] == ""


def test_versions_name_the_simulators():
    v = versions()
    assert {"torch", "gymnasium", "mujoco", "box2d"} <= set(v)
    assert v["torch"].startswith(torch.__version__.split("+")[0])
