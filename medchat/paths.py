"""Where medchat keeps user files, and how it writes them (atomically, private to the user).

Every path is computed on call (never at import), so tests and users can relocate everything with one
environment variable: ``MEDCHAT_HOME=/some/dir`` puts config, data and cache under that folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
    """Create ``path`` (and parents) readable by the user only; chats and adapters are personal."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def atomic_write_text(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` via a temp file + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
