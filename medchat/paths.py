"""Where medchat keeps user files, and how it writes them (atomically, private to the user).

Every path is computed on call (never at import), so tests and users can relocate everything with one
environment variable: ``MEDCHAT_HOME=/some/dir`` puts config, data and cache under that folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from medchat.errors import MedchatError

APP = "medchat"


def _home() -> Path | None:
    home = os.environ.get("MEDCHAT_HOME")
    return Path(home).expanduser() if home else None


def config_dir() -> Path:
    if home := _home():
        return home / "config"
    import platformdirs

    return platformdirs.user_config_path(APP)


def data_dir() -> Path:
    if home := _home():
        return home / "data"
    import platformdirs

    return platformdirs.user_data_path(APP)


def cache_dir() -> Path:
    if home := _home():
        return home / "cache"
    import platformdirs

    return platformdirs.user_cache_path(APP)


def config_file() -> Path:
    return config_dir() / "config.toml"


def adapters_dir() -> Path:
    return data_dir() / "adapters"


def history_db() -> Path:
    return data_dir() / "history.sqlite3"


def models_cache() -> Path:
    """Converted local models (the embedded model's safetensors copy lives here)."""
    return cache_dir() / "models"


def compile_cache_dir() -> Path:
    """Compiled kernels kept between training runs (torch inductor, Triton, Unsloth's generated code and
    its torch.compile mega-cache): a later run of the same model skips most of the first step's compile."""
    return cache_dir() / "compile"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` readable by the user only; chats, adapters and their names are personal.

    Every folder created on the way gets 0700, not only the last (``mkdir(parents=True, mode=...)``
    gives the parents the umask's 0755, so ``data/`` would list adapter and run names to everyone).
    Existing folders are left as they are. A folder that cannot be created is one clear error.
    """
    hint = _home_hint(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        if folder.exists() or folder.is_symlink():
            raise MedchatError(f"cannot create the folder {path}: {folder} is a file, not a folder{hint}")
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise MedchatError(f"cannot create the folder {folder}: {exc.strerror or exc}{hint}") from exc
    return path


def _home_hint(path: Path) -> str:
    """For medchat's own folders, how to move them elsewhere; nothing for a folder the user named."""
    home = _home()
    if home and path.is_relative_to(home):
        return f"; MEDCHAT_HOME is {home}: point it at a folder you can write"
    if any(path.is_relative_to(own) for own in (config_dir(), data_dir(), cache_dir())):
        return "; set MEDCHAT_HOME to a folder you can write"
    return ""


def atomic_write_text(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` via a temp file + rename, so readers never see half a file.
    Missing parent folders are created private (0700)."""
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
