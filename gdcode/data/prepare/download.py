"""``--download``: where each paper dataset's raw file comes from, and fetching it.

Only UCI's Covertype has a stable public URL; the two Kaggle sets need a Kaggle account
(and, for the competition, accepting its rules), so for them ``--download`` stops with the
steps to fetch the file by hand.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from gdcode.errors import ConfigError

#: KIND -> where its raw file comes from
SOURCES: dict[str, dict[str, str]] = {
    "covtype": {
        "file": "covtype.data.gz",
        "page": "https://archive.ics.uci.edu/dataset/31/covertype",
        "url": "https://archive.ics.uci.edu/ml/machine-learning-databases/covtype/covtype.data.gz",
        "mirror": "https://ndownloader.figshare.com/files/5976039",
        "licence": "CC BY 4.0 (UCI Machine Learning Repository)",
    },
    "amazon": {
        "file": "train.csv",
        "page": "https://www.kaggle.com/c/amazon-employee-access-challenge/data",
        "kaggle": "kaggle competitions download -c amazon-employee-access-challenge -f train.csv",
        "licence": "Kaggle competition data, under the competition's rules "
                   "(accept them on its page)",
    },
    "kc_house": {
        "file": "kc_house_data.csv",
        "page": "https://www.kaggle.com/datasets/harlfoxem/housesalesprediction",
        "kaggle": "kaggle datasets download -d harlfoxem/housesalesprediction --unzip",
        "licence": "as listed on its Kaggle page (CC0: public domain at the time of writing)",
    },
}

TIMEOUT = 60.0


def fetch(kind: str, dest: str | os.PathLike | None = None, opener=urllib.request.urlopen) -> Path:
    """Download the raw file of ``kind`` to ``dest`` (default: its file name here); return the path.

    An existing ``dest`` is used as it is. The download goes to a temporary name first, so
    an interrupted one leaves nothing that looks complete.

    Raises
    ------
    ConfigError
        For a Kaggle dataset (with the manual steps), or when the download fails (offline).
    """
    src = SOURCES[kind]
    path = Path(dest) if dest is not None else Path(src["file"])
    if path.is_file():
        return path
    if "url" not in src:
        raise ConfigError(
            f"{kind}: --download cannot fetch it: the file is on Kaggle, which needs an account "
            f"and credentials. Get {src['file']} from {src['page']} (signed in; licence: "
            f"{src['licence']}), or with the kaggle tool: `{src['kaggle']}`; then run "
            f"`gdcode prepare {kind} --raw {src['file']}`")
    tmp = path.with_name(path.name + ".part")
    errors = []
    for url in (src["url"], src.get("mirror")):
        if not url:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with opener(url, timeout=TIMEOUT) as response, tmp.open("wb") as fh:
                shutil.copyfileobj(response, fh, length=1 << 20)
            os.replace(tmp, path)
            return path
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
            tmp.unlink(missing_ok=True)
    raise ConfigError(f"{kind}: could not download {src['file']} ({'; '.join(errors)}). This "
                      "machine "
                      f"may be offline: fetch it where you are online (from {src['page']}) and "
                      f"pass --raw FILE")
