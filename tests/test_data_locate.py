"""Where data is looked for: --data alone when given, else $SENET_DATA alone when set, else
./data, ../shared/data, ~/.cache/senet, in that order; the error lists every place tried.
The machine's own folders are never seen: the current folder, $HOME and the environment are
replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from senet.data import load_split
from senet.data.locate import CIFAR_ARCHIVE, TREE, TREE_ARCHIVE, locate
from senet.errors import DataError
from tests.data_helpers import make_tree, tar_folder

PLACES = ["arg", "env", "cwd", "shared", "home"]


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Folders standing for each place; the current folder is ``proj/main``."""
    folders = {
        "arg": tmp_path / "arg",
        "env": tmp_path / "env",
        "cwd": tmp_path / "proj" / "main" / "data",
        "shared": tmp_path / "proj" / "shared" / "data",
        "home": tmp_path / "home" / ".cache" / "senet",
        "cache": tmp_path / "cache",
    }
    (tmp_path / "proj" / "main").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "proj" / "main")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SENET_DATA", raising=False)  # the tests that need it set it to folders["env"]
    monkeypatch.delenv("SENET_CACHE", raising=False)
    return folders


def _find(machine: dict[str, Path], dataset: str = "cifar10", data: Path | None = None):
    return locate(dataset, data, machine["cache"], download=False)


def test_places_are_searched_in_order(machine: dict[str, Path]) -> None:
    searched = PLACES[2:]
    for place in searched:
        (machine[place] / "cifar10-jpeg").mkdir(parents=True)
    for place in searched:
        found = _find(machine)
        assert found.path == machine[place] / "cifar10-jpeg" and found.kind == TREE
        (machine[place] / "cifar10-jpeg").rmdir()  # the next place wins now
    with pytest.raises(DataError, match="cifar10 not found"):
        _find(machine)


def test_an_explicit_place_is_the_only_place_looked_at(machine: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """--data (else $SENET_DATA) that does not hold the dataset is an error naming it and what
    was expected, never a silent fall-back to a copy found elsewhere."""
    monkeypatch.setenv("SENET_DATA", str(machine["env"]))
    for place in PLACES[1:]:
        (machine[place] / "cifar10-jpeg").mkdir(parents=True)
    machine["arg"].mkdir()
    with pytest.raises(DataError) as info:
        _find(machine, data=machine["arg"])
    msg = str(info.value)
    assert msg.startswith(f"--data {machine['arg']} does not hold cifar10: expected it to be, or to contain, one of "
                          "cifar-10-python.tar.gz, cifar-10-batches-py/, cifar10-jpeg.tar.gz, cifar10-jpeg/")
    assert _find(machine).path == machine["env"] / "cifar10-jpeg"  # no --data: $SENET_DATA, which holds it
    (machine["env"] / "cifar10-jpeg").rmdir()
    with pytest.raises(DataError, match=rf"^\$SENET_DATA {machine['env']} does not hold cifar10"):
        _find(machine)
    (machine["arg"] / "cifar10-jpeg").mkdir()
    assert _find(machine, data=machine["arg"]).path == machine["arg"] / "cifar10-jpeg"


def test_the_cache_folder_is_searched_last(machine: dict[str, Path]) -> None:
    (machine["cache"] / "cifar-10-python.tar.gz").parent.mkdir(parents=True)
    (machine["cache"] / "cifar-10-python.tar.gz").write_bytes(b"")  # where a download would have put it
    found = _find(machine)
    assert found.kind == CIFAR_ARCHIVE and found.path == machine["cache"] / "cifar-10-python.tar.gz"
    assert found.cifar == "cifar10"


def test_error_lists_every_place_tried_in_order(machine: dict[str, Path]) -> None:
    machine["shared"].mkdir(parents=True)
    with pytest.raises(DataError) as info:
        _find(machine)
    msg = str(info.value)
    expected = [
        "1. data argument (--data): not set",
        "2. $SENET_DATA: not set",
        f"3. ./data: {machine['cwd']} (does not exist)",
        f"4. ../shared/data: {machine['shared']} (none of the names below)",
        f"5. ~/.cache/senet: {machine['home']} (does not exist)",
        f"6. cache folder ($SENET_CACHE / cache_dir): {machine['cache']} (does not exist)",
        "7. download: not allowed (download=False)",
    ]
    positions = [msg.index(line) for line in expected]
    assert positions == sorted(positions)
    assert "Put one of cifar-10-python.tar.gz, cifar-10-batches-py/, cifar10-jpeg.tar.gz, cifar10-jpeg/" in msg


def test_unset_environment_is_reported_as_not_set(machine: dict[str, Path]) -> None:
    with pytest.raises(DataError, match=r"\$SENET_DATA: not set"):
        _find(machine, "cifar100")


def test_a_missing_data_argument_is_an_error(machine: dict[str, Path]) -> None:
    (machine["cwd"] / "cifar10-jpeg").mkdir(parents=True)  # would be found, but --data was explicit
    with pytest.raises(DataError, match=f"--data {machine['arg']} does not exist"):
        _find(machine, data=machine["arg"])


def test_a_place_may_be_the_dataset_itself(machine: dict[str, Path], tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "mytree")
    archive = tar_folder(tree, tmp_path / "mytree.tar.gz")
    assert _find(machine, data=archive).kind == TREE_ARCHIVE
    found = _find(machine, data=tree)
    assert found.kind == TREE and found.path == tree


def test_a_folder_holding_several_datasets_gives_the_one_asked_for(machine: dict[str, Path]) -> None:
    """./data with a CIFAR-10 tree and the CIFAR-100 archive: cifar100 is the archive (the
    lone tree folder must not be taken for the place itself)."""
    make_tree(machine["cwd"], top="cifar10-jpeg")
    (machine["cwd"] / "cifar-100-python.tar.gz").write_bytes(b"")
    found = _find(machine, "cifar100")
    assert found.kind == CIFAR_ARCHIVE and found.path == machine["cwd"] / "cifar-100-python.tar.gz"
    assert _find(machine, "cifar10").path == machine["cwd"] / "cifar10-jpeg"


def test_load_split_reads_the_located_tree(machine: dict[str, Path]) -> None:
    classes = tuple(f"c{i}" for i in range(10))
    make_tree(machine["shared"], classes=classes, per_class={"train": 1, "test": 1}, top="cifar10-jpeg")
    ds = load_split("cifar10", "test", cache_dir=machine["cache"])
    assert ds.classes == list(classes) and ds.source == str(machine["shared"] / "cifar10-jpeg")


def test_a_tree_with_the_wrong_number_of_classes_is_refused(machine: dict[str, Path]) -> None:
    make_tree(machine["shared"], top="cifar10-jpeg")  # 3 classes
    with pytest.raises(DataError, match="has 3 classes, but cifar10 has 10"):
        load_split("cifar10", "train", cache_dir=machine["cache"])


def test_unknown_dataset_and_imagefolder_without_path(machine: dict[str, Path]) -> None:
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*cifar10, cifar100, 'imagefolder'"):
        load_split("mnist", "train", cache_dir=machine["cache"])
    with pytest.raises(DataError, match="needs a path"):
        load_split("imagefolder", "train", cache_dir=machine["cache"])
