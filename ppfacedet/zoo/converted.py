"""Paddle weights for a zoo name: the official file converted once by the
family's converter (tools/convert_weights.py's path) and cached under the
official file's sha256, so a different official file is converted anew."""
import os

from .fetch import licence_notice, official_file, say
from .registry import config_path, entry as zoo_entry
from .store import converted_file


def converted_weights(name, timeout=60):
    """The path of ``name``'s converted ``.pdparams`` (fetching and converting when needed)."""
    entry = zoo_entry(name)
    found = official_file(entry, timeout)
    target = converted_file(entry, found.sha256)
    if os.path.isfile(target):
        return target
    from ..convert.apply import convert_official_weights
    from ..core.config import load_config
    from ..engine.checkpoint import atomic_save
    model, count = convert_official_weights(load_config(config_path(name)), found.path)
    atomic_save(model.state_dict(), target)
    state = "verified" if found.verified else "UNVERIFIED"
    say(f"{name}: converted {count} tensors from {found.path} ({state}, sha256 {found.sha256[:12]}...) -> {target}")
    say(licence_notice(entry))
    return target
