"""Compile caches under medchat's cache folder, so the first training step's compilation is paid once.

Unsloth compiles every decoder layer, its loss and its LoRA kernels on the first step (about 45 s for
the 8B shape on an H100). torch keeps the results in on-disk caches whose default homes are a /tmp
folder (inductor), ~/.triton (Triton) and, for Unsloth, ~/.cache/unsloth and an `unsloth_compiled_cache`
folder in the current directory. Pointing them all under ``paths.compile_cache_dir()`` keeps them
together, survives a reboot that clears /tmp, follows ``MEDCHAT_HOME`` and leaves the user's working
directory alone. A variable the user set already wins.

* ``TORCHINDUCTOR_CACHE_DIR``: inductor's FX graph, AOTAutograd and autotuning caches (read when a
  graph compiles; Unsloth drops the variable when it is imported, so :func:`use_compile_caches` runs
  again after loading).
* ``TRITON_CACHE_DIR``: compiled Triton kernels.
* ``UNSLOTH_MEGA_CACHE_DIR``: Unsloth's bundle of torch.compile artifacts
  (``torch.compiler.save_cache_artifacts``), loaded before the first compiled forward, saved at exit
  by the first rank of a node.
* ``UNSLOTH_COMPILE_LOCATION``: the Python source Unsloth generates for the model's modules.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from medchat import paths

FOLDERS = {
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TRITON_CACHE_DIR": "triton",
    "UNSLOTH_MEGA_CACHE_DIR": "unsloth-mega",
    "UNSLOTH_COMPILE_LOCATION": "unsloth-generated",
}


def compile_caches() -> dict[str, Path]:
    """Environment variable -> the folder medchat gives it."""
    root = paths.compile_cache_dir()
    return {var: root / folder for var, folder in FOLDERS.items()}


_user_set: frozenset[str] | None = None  # the variables the user had set, noted at the first call


def use_compile_caches(environ: MutableMapping[str, str] | None = None, *, user_set: frozenset[str] | None = None
                       ) -> dict[str, str]:
    """Point every compile cache the user did not choose at medchat's folder; returns var -> folder in use.

    Call it before torch is imported and again after the model is loaded: the variables the user set
    before the first call (or ``user_set``) are left alone, the others are set (again) to medchat's.
    """
    global _user_set
    environ = os.environ if environ is None else environ
    if user_set is None:
        if _user_set is None:
            _user_set = frozenset(var for var in FOLDERS if var in environ)
        user_set = _user_set
    used = {}
    for var, folder in compile_caches().items():
        if var in user_set and var in environ:
            used[var] = environ[var]
            continue
        paths.ensure_private_dir(folder)  # Unsloth loads its mega-cache only from a folder private to the user
        environ[var] = str(folder)
        used[var] = str(folder)
    return used
