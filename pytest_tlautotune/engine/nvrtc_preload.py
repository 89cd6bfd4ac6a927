"""Imported by the workers' fork server, before TileLang: load NVRTC before any worker is
forked, and where ``workers.prestart`` handed it a book of header prefixes, write their PCHs in
the background meanwhile (``device_compile.prime_detached``).

NVRTC uses a precompiled header only in the "dynamic instance" of the library that wrote it (its
PCH heap's address). Loaded here, the library sits at the same address in every worker, so one
PCH per header prefix serves them all (``device_compile._SharedPch``). Nothing happens where
cuda-python or libnvrtc is missing. NVRTC does not initialise the CUDA driver.
"""

import os

from .device_compile import BOOK_ENV, load_library, prime_detached

load_library()
_book = os.environ.pop(BOOK_ENV, None)
if _book is not None:  # "": no book, the shipped seeds
    prime_detached(_book)
