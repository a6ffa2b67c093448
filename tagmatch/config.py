"""The user's config file (TOML): for now, key bindings of the terminal UI.

    # ~/.config/tagmatch/config.toml (or $TAGMATCH_CONFIG)
    [keys]
    "review.accept" = "a,enter"    # binding id = keys, comma-separated (Textual key names)
    "review.reject" = "r"

Every binding of the TUI has an id (`tagmatch keys` lists them with their keys); a key given
here replaces that binding's default keys.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from tagmatch.errors import TagmatchError


def config_path() -> Path:
    env = os.environ.get("TAGMATCH_CONFIG")
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir("tagmatch")) / "config.toml"


def load_config(path: Path | None = None) -> dict:
    """The config as a dict ({} when there is no file); a broken file raises a one-line error."""
    path = path or config_path()
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TagmatchError(f"{path}: {exc}") from None


def keymap(config: dict, known_ids: set[str] | None = None) -> dict[str, str]:
    """The `[keys]` table checked: binding id -> keys. Unknown ids (when `known_ids` is given)
    and non-string values are errors, so a typo does not pass silently."""
    keys = config.get("keys", {})
    if not isinstance(keys, dict):
        raise TagmatchError("config: [keys] must be a table of binding id = \"keys\"")
    bad = [k for k, v in keys.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise TagmatchError(f"config: keys of {', '.join(bad)} must be non-empty strings such as \"a,enter\"")
    unknown = sorted(set(keys) - known_ids) if known_ids is not None else []
    if unknown:
        raise TagmatchError(f"config: no binding has the id {', '.join(unknown)} (`tagmatch keys` lists them)")
    return {k: v.replace(" ", "") for k, v in keys.items()}
