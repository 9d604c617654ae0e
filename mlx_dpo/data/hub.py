"""Where a `--data` value's rows are: a local file, a local dataset folder, or a Hub dataset (`owner/name[:split]`).

    source = data_source("trl-lib/ultrafeedback_binarized:test")  # DataSource(name, files)

A Hub dataset is fetched with huggingface_hub (repo_type="dataset") into the standard HF cache, honouring
HF_HUB_OFFLINE, HF_HOME and the user's token as `--model` does (models/load.py); only the dataset card and
the files of the asked config and split are downloaded. Which files those are follows the Hub's own
conventions, as `datasets.load_dataset` reads them:
  - the card's YAML header, `configs:` (`config_name`, `data_files` by split, `default: true`);
  - else file and folder names: a split's name as a word of a file or folder name (`train-00000-of-00001.parquet`,
    `data/test.jsonl`, `validation/0000.parquet`; "training" also means train, "valid"/"val"/"dev" validation,
    "testing"/"eval"/"evaluation" test); when no file names a split, every file is "train". With
    `--data-config NAME` and no YAML configs, the files under the folder NAME/ (the Hub's Parquet conversion).
A local folder is read by the same rules, without a download. Data files are Parquet or JSON Lines, gzipped or
not (rows.py).
Without `:split`, training data reads "train" and validation data "test" (TRL's dataset_train_split and
dataset_test_split defaults).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlx_dpo.data.rows import DATA_SUFFIXES, is_data_file
from mlx_dpo.errors import MlxDpoError
from mlx_dpo.names import is_repo_id

CARD = "README.md"
SPLIT_WORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
_SEP = r"[-._ 0-9]"  # what may stand next to a split's name in a file name (datasets' NON_WORDS_CHARS)


@dataclass
class DataSource:
    """The data files one `--data` value stands for, in order, each with the name messages give it."""

    name: str  # the file as given, or the dataset with its split ("owner/name:train")
    files: list[tuple[str, Path]]  # (shown name, local path)


def data_source(spec: str | Path, config: str | None = None, default_split: str = "train") -> DataSource:
    """The files of a `--data` value: a file, a dataset folder (`DIR[:split]`) or a Hub dataset
    (`owner/name[:split]`)."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        if config is not None:
            raise MlxDpoError(
                f"--data-config {config}: applies to a dataset (a Hub name or a folder), not to the file {spec}"
            )
        return DataSource(spec, [(spec, path)])
    base, split = (spec, None) if path.is_dir() or ":" not in spec else spec.rsplit(":", 1)
    split = split or default_split
    if Path(base).expanduser().is_dir():
        folder = Path(base).expanduser()
        rel = _local_files(folder)
        if not any(is_data_file(r) for r in rel):
            raise MlxDpoError(f"{base}: is a folder with no data files (Parquet or JSON Lines) in it")
        chosen = _select(base, rel, _card_configs(folder), config, split)
        return DataSource(f"{base}:{split}", [(str(folder / r), folder / r) for r in chosen])
    if is_data_file(base):
        raise MlxDpoError(f"{spec}: no such file")
    if not is_repo_id(base):
        raise MlxDpoError(f"{spec}: no such file or folder, and not a Hugging Face dataset (owner/name[:split])")
    return DataSource(f"{base}:{split}", _hub_files(base, config, split))


def _hub_files(repo_id: str, config: str | None, split: str) -> list[tuple[str, Path]]:
    """The split's files of a Hub dataset, downloaded (or found in the cache): first the card, then only those."""
    folder = _fetch(repo_id, [CARD])
    configs = _card_configs(folder)
    if configs is not None:
        wanted = _yaml_patterns(repo_id, configs, config, split)
    else:  # names decide: a split other than train names its files; train may be every file
        prefix = f"{config}/" if config else ""
        words = _words(split)[1]
        stems = ["*"] if _words(split)[0] == "train" else [f"*{w}*" for w in words]
        wanted = [f"{prefix}{s}{suffix}" for s in stems for suffix in DATA_SUFFIXES]
    folder = _fetch(repo_id, wanted)
    chosen = _select(repo_id, _local_files(folder), configs, config, split)
    return [(f"hf://datasets/{repo_id}/{r}", folder / r) for r in chosen]


def _fetch(repo_id: str, patterns: list[str]) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns))
    except GatedRepoError:
        raise MlxDpoError(f"{repo_id}: gated dataset; accept its terms on the Hub and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise MlxDpoError(f"{repo_id}: no such dataset on the Hugging Face Hub (or no access)") from None
    except (LocalEntryNotFoundError, IncompleteSnapshotError):
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise MlxDpoError(
            f"{repo_id}: not (or not wholly) in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}"
        ) from None
    except (HfHubHTTPError, OSError) as e:
        raise MlxDpoError(f"{repo_id}: download failed ({type(e).__name__}: {e})") from None


def _local_files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _card_configs(folder: Path) -> list[dict] | None:
    """The `configs:` of a dataset card's YAML header, or None when the card has none."""
    import yaml

    try:
        text = (folder / CARD).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    match = re.match(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", text, re.S)
    try:
        header = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError as e:
        raise MlxDpoError(f"{folder / CARD}: its YAML header does not parse ({str(e).splitlines()[0]})") from None
    configs = header.get("configs") if isinstance(header, dict) else None
    if not isinstance(configs, list):
        return None
    return [c for c in configs if isinstance(c, dict)] or None


def _words(split: str) -> tuple[str, tuple[str, ...]]:
    """(canonical name, the words that mean it): "valid" -> ("validation", (...)); a custom split is itself."""
    for canonical, words in SPLIT_WORDS.items():
        if split in words:
            return canonical, words
    return split, (split,)


def _names(rel: str, words: tuple[str, ...]) -> bool:
    """Whether a file's name, or one of its folders' names, holds one of `words` as a word."""
    return any(
        re.search(rf"(^|{_SEP}){re.escape(w)}({_SEP}|$)", part) for part in PurePosixPath(rel).parts for w in words
    )


def _data_files(config: dict) -> dict[str, list[str]]:
    """A YAML config's data_files as {split: [patterns]} (a bare pattern or list means "train")."""
    files = config.get("data_files")
    if isinstance(files, str):
        files = [files]
    if isinstance(files, list) and all(isinstance(f, str) for f in files):
        return {"train": list(files)}
    if isinstance(files, dict):
        return {str(k): [v] if isinstance(v, str) else list(v) for k, v in files.items()}
    if isinstance(files, list):
        out: dict[str, list[str]] = {}
        for entry in files:
            if isinstance(entry, dict) and "split" in entry and "path" in entry:
                path = entry["path"]
                out.setdefault(str(entry["split"]), []).extend([path] if isinstance(path, str) else path)
        return out
    return {}


def _yaml_config(name: str, configs: list[dict], config: str | None) -> dict:
    names = [str(c.get("config_name", "default")) for c in configs]
    if config is not None:
        if config not in names:
            raise MlxDpoError(f"{name}: no config {config!r} (configs: {', '.join(names)})")
        return configs[names.index(config)]
    for c in configs:
        if c.get("default") is True:
            return c
    if "default" in names:
        return configs[names.index("default")]
    if len(configs) == 1:
        return configs[0]
    raise MlxDpoError(f"{name}: has several configs ({', '.join(names)}); choose one with --data-config NAME")


def _yaml_split(name: str, files: dict[str, list[str]], split: str) -> list[str]:
    canonical, words = _words(split)
    for candidate in (split, canonical, *words):
        if candidate in files:
            return files[candidate]
    raise MlxDpoError(f"{name}: no split {split!r} (splits: {', '.join(files) or 'none'}); name one as {name}:SPLIT")


def _yaml_patterns(name: str, configs: list[dict], config: str | None, split: str) -> list[str]:
    return _yaml_split(name, _data_files(_yaml_config(name, configs, config)), split)


def _select(name: str, rel: list[str], configs: list[dict] | None, config: str | None, split: str) -> list[str]:
    """The data files of (config, split) among a dataset folder's files (paths relative to it)."""
    if configs is not None:
        patterns = _yaml_patterns(name, configs, config, split)
        matched = [r for r in rel if any(_glob_match(r, p) for p in patterns)]
    else:
        if config is not None:
            rel = [r for r in rel if r.startswith(f"{config}/")]
            if not rel:
                raise MlxDpoError(f"{name}: no config {config!r} (no YAML configs in its card, no folder {config}/)")
        canonical, words = _words(split)
        named = [r for r in rel if any(_names(r, w) for w in SPLIT_WORDS.values())]
        matched = [r for r in rel if _names(r, words)] if named or canonical != "train" else rel
        matched = [r for r in matched if r != CARD]
    usable = [r for r in matched if is_data_file(r)]
    if not usable:
        other = sorted({PurePosixPath(r).suffix for r in matched if PurePosixPath(r).suffix})
        found = f" (found only {', '.join(other)} files; mlx-dpo reads Parquet and JSON Lines)" if other else ""
        raise MlxDpoError(f"{name}: no data files for split {split!r}{found}")
    return usable


def _glob_match(rel: str, pattern: str) -> bool:
    """A YAML data_files pattern as `datasets` reads it: * within a folder, ** across folders."""
    regex = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
        for part in re.split(r"(\*\*|\*)", pattern.lstrip("/"))
    )
    return re.fullmatch(regex.replace(".*/", "(.*/)?"), rel) is not None
