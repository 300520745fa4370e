"""Process settings that must precede torch's first allocation (imported first by the package).

``THP_MEM_ALLOC_ENABLE=1`` makes PyTorch's CPU allocator request transparent huge pages for
tensors of 2 MiB and more. The evaluator's gathers and GEMM outputs are such tensors; in 4 KiB
pages, filling a fresh 157 MiB pool state cost ~5x a copy into memory already mapped on this
VM. It only takes effect when fsarbench is imported before torch (``python -m fsarbench``,
``python -m benchmarks``); a value the user set is left alone (``0`` turns it off).
"""

from __future__ import annotations

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
