"""The kernel modules that inner pytest runs import: the text of the shared kernels in ``examples/``.

Read as text, not imported: importing TileLang in the test process breaks later pytester runs.
The intentionally slow or wrong candidates the tests need are arguments of these kernels
(``gemm(..., bug_when_bk=32)``, ``repeat=``, ``extra=``, ``offset=``, ``segv=``), not copies.
"""

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: ``examples/kernels_cpu.py``: inner runs import it as ``kernels`` (gemm, elementwise_add, relu).
KERNELS = (EXAMPLES / "kernels_cpu.py").read_text()
#: ``examples/kernels_cuda.py``: inner runs import it as ``cuda_kernels`` (gemm, elementwise_add).
CUDA_KERNELS = (EXAMPLES / "kernels_cuda.py").read_text()
