"""Heavy or optional modules load only when used: grpc/protobuf with a kubelet socket, pynvml."""

from __future__ import annotations

import subprocess
import sys


def test_gpu_package_imports_no_optional_dependency() -> None:
    code = (
        "import sys\n"
        "import ceems.exporter.gpu.flags, ceems.exporter.gpu.mapper, ceems.exporter.gpu.metrics\n"
        "print(sorted(m for m in ('grpc', 'google.protobuf', 'pynvml') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
