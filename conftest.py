"""Root conftest for the project's own tests and examples.

Keeps test runs out of the user's real cache: unless TL_AUTOTUNE_CACHE_DIR is
set, inner and outer runs use a per-session temporary cache directory.
"""

import os
import tempfile

if "TL_AUTOTUNE_CACHE_DIR" not in os.environ and os.environ.get("TL_AUTOTUNE_USE_USER_CACHE") != "1":
    os.environ["TL_AUTOTUNE_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"tlautotune-tests-{os.getuid()}")
