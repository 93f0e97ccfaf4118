"""The 14 transfer datasets (client.data.datasets): miniature trees in each source's exact layout, loaded
through ``load_dataset``; the few-shot protocol and its cache; errors that name the missing path."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from client._exceptions import DatasetError
from client.data.datasets import DATASETS, DatasetSplits, Item, load_dataset
from client.data.fewshot import cache_path, sample_few_shot
from client.training.config import dataset_presets

# --------------------------------------------------------------------------- tree builders

COUNTS = {"train": 3, "val": 2, "test": 2}  # images per class in each split of the JSON-split trees


def _image(path: Path, shade: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (shade % 256, 40, 90)).save(path)


@dataclass
class Tree:
    """What a builder wrote: the expected class names and split sizes, the split/list file to delete
    in the missing-file test (with the text its error must contain) and the image folder."""

    class_names: list[str]
    sizes: dict[str, int]
    split_file: Path
    split_hint: str
    image_root: Path


def _json_tree(
    root: Path, folder: str, image_dir: str, split_file: str, classes: list[tuple[str, Callable[[int], str]]]
) -> Tree:
    """A CoOp-style split file over ``classes``: (class name, index -> path relative to the image root)."""
    image_root = root / folder / image_dir if image_dir else root / folder
    split: dict[str, list[list[object]]] = {}
    index = 0
    for name, count in COUNTS.items():
        split[name] = []
        for label, (class_name, relative) in enumerate(classes):
            for _ in range(count):
                rel = relative(index)
                _image(image_root / rel, index)
                split[name].append([rel, label, class_name])
                index += 1
    (root / folder / split_file).write_text(json.dumps(split))
    sizes = {name: count * len(classes) for name, count in COUNTS.items()}
    return Tree([c for c, _ in classes], sizes, root / folder / split_file, split_file, image_root)


def build_caltech101(root: Path) -> Tree:
    # CoOp's labels follow the sorted folder names (Faces, Leopards, accordion); names are renamed
    classes = [
        ("face", lambda i: f"Faces/image_{i:04d}.jpg"),
        ("leopard", lambda i: f"Leopards/image_{i:04d}.jpg"),
    ]
    classes.append(("accordion", lambda i: f"accordion/image_{i:04d}.jpg"))
    return _json_tree(root, "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", classes)


def build_oxford_pets(root: Path) -> Tree:
    classes = [
        ("abyssinian", lambda i: f"Abyssinian_{i}.jpg"),
        ("american_bulldog", lambda i: f"american_bulldog_{i}.jpg"),
    ]
    (root / "oxford_pets" / "annotations").mkdir(parents=True)
    return _json_tree(root, "oxford_pets", "images", "split_zhou_OxfordPets.json", classes)


def build_stanford_cars(root: Path) -> Tree:
    classes = [
        ("2000 AM General Hummer SUV", lambda i: f"cars_train/{i:05d}.jpg"),
        ("2012 Acura RL Sedan", lambda i: f"cars_test/{i:05d}.jpg"),
    ]
    return _json_tree(root, "stanford_cars", "", "split_zhou_StanfordCars.json", classes)


def build_oxford_flowers(root: Path) -> Tree:
    classes = [
        ("pink primrose", lambda i: f"image_{i:05d}.jpg"),
        ("hard-leaved pocket orchid", lambda i: f"image_{i + 100:05d}.jpg"),
    ]
    return _json_tree(root, "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", classes)


def build_food101(root: Path) -> Tree:
    classes = [
        ("apple_pie", lambda i: f"apple_pie/{1000 + i}.jpg"),
        ("baby_back_ribs", lambda i: f"baby_back_ribs/{2000 + i}.jpg"),
    ]
    return _json_tree(root, "food-101", "images", "split_zhou_Food101.json", classes)


def build_sun397(root: Path) -> Tree:
    classes = [
        ("abbey", lambda i: f"a/abbey/sun_{i:04d}.jpg"),
        ("outdoor apartment_building", lambda i: f"a/apartment_building/outdoor/sun_{i:04d}.jpg"),
    ]
    return _json_tree(root, "sun397", "SUN397", "split_zhou_SUN397.json", classes)


def build_dtd(root: Path) -> Tree:
    classes = [
        ("banded", lambda i: f"banded/banded_{i:04d}.jpg"),
        ("blotchy", lambda i: f"blotchy/blotchy_{i:04d}.jpg"),
    ]
    return _json_tree(root, "dtd", "images", "split_zhou_DescribableTextures.json", classes)


def build_eurosat(root: Path) -> Tree:
    classes = [
        ("Annual Crop Land", lambda i: f"AnnualCrop/AnnualCrop_{i}.jpg"),
        ("Forest", lambda i: f"Forest/Forest_{i}.jpg"),
        ("Sea or Lake", lambda i: f"SeaLake/SeaLake_{i}.jpg"),
    ]
    return _json_tree(root, "eurosat", "2750", "split_zhou_EuroSAT.json", classes)


def build_ucf101(root: Path) -> Tree:
    classes = [
        ("Apply_Eye_Makeup", lambda i: f"Apply_Eye_Makeup/v_ApplyEyeMakeup_g{i:02d}_c01.jpg"),
        ("Baby_Crawling", lambda i: f"Baby_Crawling/v_BabyCrawling_g{i:02d}_c01.jpg"),
    ]
    return _json_tree(root, "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", classes)


def build_resisc45(root: Path) -> Tree:
    classes = [
        ("airplane", lambda i: f"airplane/airplane_{i:03d}.jpg"),
        ("baseball_diamond", lambda i: f"baseball_diamond/baseball_diamond_{i:03d}.jpg"),
    ]
    return _json_tree(root, "resisc45", "NWPU-RESISC45", "split_mlai_Resisc45.json", classes)


FGVC_VARIANTS = ["707-320", "A330-200", "Cessna 172", "F/A-18"]


def build_fgvc_aircraft(root: Path) -> Tree:
    folder = root / "fgvc_aircraft"
    folder.mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(FGVC_VARIANTS) + "\n")
    image_id = 34300
    for split, count in COUNTS.items():
        lines = []
        for variant in FGVC_VARIANTS:
            for _ in range(count):
                lines.append(f"{image_id:07d} {variant}")
                _image(folder / "images" / f"{image_id:07d}.jpg", image_id)
                image_id += 1
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    sizes = {split: count * len(FGVC_VARIANTS) for split, count in COUNTS.items()}
    return Tree(
        FGVC_VARIANTS, sizes, folder / "images_variant_val.txt", "images_variant_val.txt", folder / "images"
    )


IMAGENET = {"n01440764": "tench", "n01443537": "goldfish", "n02102040": "English springer"}


def build_imagenet(root: Path) -> Tree:
    folder = root / "imagenet"
    folder.mkdir(parents=True)
    # classnames.txt lists all 1000 classes; folders here are a subset, listed out of order on purpose
    lines = [f"{wnid} {name}" for wnid, name in reversed(IMAGENET.items())] + ["n15075141 toilet paper"]
    (folder / "classnames.txt").write_text("\n".join(lines) + "\n")
    for split, count in (("train", 4), ("val", 2)):
        for wnid in IMAGENET:
            for i in range(count):
                _image(folder / "images" / split / wnid / f"{wnid}_{i}.JPEG", i)
            (folder / "images" / split / wnid / ".DS_Store").write_text("hidden")
    sizes = {"train": 12, "val": 6, "test": 6}
    return Tree(
        list(IMAGENET.values()), sizes, folder / "classnames.txt", "classnames.txt", folder / "images"
    )


def build_svhn(root: Path) -> Tree:
    folder = root / "svhn"
    split: dict[str, list[list[object]]] = {"train": [], "val": []}
    digits = ["0", "1", "2"]
    index = 1
    for name, count in (("train", 3), ("val", 2)):
        for label, digit in enumerate(digits):
            for _ in range(count):
                rel = f"{digit}/{index:05d}.jpg"
                _image(folder / "train" / rel, index)
                split[name].append([rel, label, digit])
                index += 1
    for digit in digits:  # the test set is every image of svhn/test/<digit>/
        for i in range(2):
            _image(folder / "test" / digit / f"{i + 1:05d}.jpg", i)
    (folder / "split_mlai_SVHN.json").write_text(json.dumps(split))
    sizes = {"train": 9, "val": 6, "test": 6}
    return Tree(digits, sizes, folder / "split_mlai_SVHN.json", "split_mlai_SVHN.json", folder / "train")


CLEVR_COUNTS = [3, 4, 10]  # class names sorted as strings, as BlackVIP's clevr.py does: "10", "3", "4"


def _clevr_scenes(folder: Path, split: str, per_count: int) -> list[tuple[str, int]]:
    scenes, images = [], []
    for count in CLEVR_COUNTS:
        for _ in range(per_count):
            file_name = f"CLEVR_{split}_{len(scenes):06d}.png"
            objects = [{"shape": "cube", "color": "red", "size": "large"} for _ in range(count)]
            scenes.append(
                {"image_index": len(scenes), "image_filename": file_name, "split": split, "objects": objects}
            )
            _image(folder / "images" / split / file_name, len(scenes))
            images.append((f"{split}/{file_name}", count))
    (folder / "scenes").mkdir(parents=True, exist_ok=True)
    info = {"split": split, "version": "1.0"}
    (folder / "scenes" / f"CLEVR_{split}_scenes.json").write_text(
        json.dumps({"info": info, "scenes": scenes})
    )
    return images


def build_clevr(root: Path) -> Tree:
    folder = root / "CLEVR_v1.0"
    train_images = _clevr_scenes(folder, "train", 5)
    test_images = _clevr_scenes(folder, "val", 2)
    names = sorted(str(c) for c in CLEVR_COUNTS)
    label_of = {name: label for label, name in enumerate(names)}

    def entries(images: list[tuple[str, int]]) -> list[list[object]]:
        return [[rel, label_of[str(count)], str(count)] for rel, count in images]

    train_part = [im for i, im in enumerate(train_images) if i % 5 != 0]
    val_part = [im for i, im in enumerate(train_images) if i % 5 == 0]
    split = {"train": entries(train_part), "val": entries(val_part), "test": entries(test_images)}
    (folder / "split_mlai_CLEVR.json").write_text(json.dumps(split))
    sizes = {"train": 12, "val": 3, "test": 6}
    return Tree(names, sizes, folder / "split_mlai_CLEVR.json", "split_mlai_CLEVR.json", folder / "images")


BUILDERS: dict[str, Callable[[Path], Tree]] = {
    "caltech101": build_caltech101,
    "oxford_pets": build_oxford_pets,
    "stanford_cars": build_stanford_cars,
    "oxford_flowers": build_oxford_flowers,
    "food101": build_food101,
    "fgvc_aircraft": build_fgvc_aircraft,
    "sun397": build_sun397,
    "dtd": build_dtd,
    "svhn": build_svhn,
    "eurosat": build_eurosat,
    "resisc45": build_resisc45,
    "clevr": build_clevr,
    "ucf101": build_ucf101,
    "imagenet": build_imagenet,
}

# --------------------------------------------------------------------------- loading


def test_registry_matches_the_presets() -> None:
    assert list(DATASETS) == list(BUILDERS)
    assert set(DATASETS) <= set(dataset_presets())


@pytest.mark.parametrize("name", list(BUILDERS))
def test_load_each_dataset(tmp_path: Path, name: str) -> None:
    tree = BUILDERS[name](tmp_path)
    splits = load_dataset(name, tmp_path)
    assert isinstance(splits, DatasetSplits)
    assert splits.class_names == tree.class_names
    assert {split: len(getattr(splits, split)) for split in ("train", "val", "test")} == tree.sizes
    for split in ("train", "val", "test"):
        items = getattr(splits, split)
        assert all(isinstance(item, Item) and item.path.is_file() for item in items)
        assert all(isinstance(item.label, int) for item in items)
        # every class appears in every split, and labels index class_names
        assert sorted({item.label for item in items}) == list(range(len(tree.class_names)))
    assert all(item.path.is_relative_to(tree.image_root) for item in splits.train)


def test_json_split_keeps_file_order_labels_and_paths(tmp_path: Path) -> None:
    build_oxford_pets(tmp_path)
    split = json.loads((tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json").read_text())
    splits = load_dataset("oxford_pets", tmp_path)
    for name in ("train", "val", "test"):
        expected = [Item(tmp_path / "oxford_pets" / "images" / rel, label) for rel, label, _ in split[name]]
        assert getattr(splits, name) == expected


def test_stanford_cars_paths_start_at_the_dataset_folder(tmp_path: Path) -> None:
    build_stanford_cars(tmp_path)
    splits = load_dataset("stanford_cars", tmp_path)
    assert splits.train[0].path.parent == tmp_path / "stanford_cars" / "cars_train"


def test_sun397_and_ucf101_keep_coops_processed_names(tmp_path: Path) -> None:
    build_sun397(tmp_path)
    build_ucf101(tmp_path)
    assert load_dataset("sun397", tmp_path).class_names == ["abbey", "outdoor apartment_building"]
    assert load_dataset("ucf101", tmp_path).class_names == ["Apply_Eye_Makeup", "Baby_Crawling"]


@pytest.mark.parametrize(
    ("name", "builder", "old", "new"),
    [
        ("caltech101", build_caltech101, "face", "Faces"),
        ("eurosat", build_eurosat, "Sea or Lake", "SeaLake"),
    ],
)
def test_original_folder_names_get_coops_renames(
    tmp_path: Path, name: str, builder: Callable[[Path], Tree], old: str, new: str
) -> None:
    tree = builder(tmp_path)
    split = json.loads(tree.split_file.read_text())
    for entries in split.values():
        for entry in entries:
            entry[2] = new if entry[2] == old else entry[2]
    tree.split_file.write_text(json.dumps(split))
    assert load_dataset(name, tmp_path).class_names == tree.class_names


def test_fgvc_aircraft_reads_variant_lists(tmp_path: Path) -> None:
    build_fgvc_aircraft(tmp_path)
    splits = load_dataset("fgvc_aircraft", tmp_path)
    first = splits.train[0]
    assert first.path == tmp_path / "fgvc_aircraft" / "images" / "0034300.jpg" and first.label == 0
    assert splits.class_names[splits.train[-1].label] == "F/A-18"  # spaces and slashes kept


def test_imagenet_labels_follow_sorted_wnids_and_val_is_test(tmp_path: Path) -> None:
    build_imagenet(tmp_path)
    splits = load_dataset("imagenet", tmp_path)
    assert splits.val == splits.test
    assert splits.test[0].path.parent.name == "n01440764" and splits.test[0].label == 0
    assert splits.train[-1].path.parent.name == "n02102040" and splits.train[-1].label == 2
    assert all(not item.path.name.startswith(".") for item in splits.train)


def test_imagenet_val_folder_unknown_to_train_is_an_error(tmp_path: Path) -> None:
    build_imagenet(tmp_path)
    _image(tmp_path / "imagenet" / "images" / "val" / "n09999999" / "x.JPEG")
    with pytest.raises(DatasetError, match="n09999999"):
        load_dataset("imagenet", tmp_path)


def test_svhn_test_set_is_the_test_folder(tmp_path: Path) -> None:
    build_svhn(tmp_path)
    splits = load_dataset("svhn", tmp_path)
    assert splits.train[0].path == tmp_path / "svhn" / "train" / "0" / "00001.jpg"
    assert [item.label for item in splits.test] == [0, 0, 1, 1, 2, 2]
    assert all(item.path.parent.parent == tmp_path / "svhn" / "test" for item in splits.test)


def test_svhn_split_file_variants(tmp_path: Path) -> None:
    """A test list in the split file, paths from svhn/ itself, and the name svhn.py uses."""
    tree = build_svhn(tmp_path)
    split = json.loads(tree.split_file.read_text())
    split = {name: [[f"train/{rel}", label, cls] for rel, label, cls in split[name]] for name in split}
    split["test"] = [["test/2/00001.jpg", 2, "2"]]
    tree.split_file.unlink()
    (tmp_path / "svhn" / "split_SVHN.json").write_text(json.dumps(split))
    splits = load_dataset("svhn", tmp_path)
    assert splits.train[0].path == tmp_path / "svhn" / "train" / "0" / "00001.jpg"
    assert splits.test == [Item(tmp_path / "svhn" / "test" / "2" / "00001.jpg", 2)]


def _scene_counts(folder: Path) -> dict[str, int]:
    counts = {}
    for split in ("train", "val"):
        scenes = json.loads((folder / "scenes" / f"CLEVR_{split}_scenes.json").read_text())["scenes"]
        counts.update({f"{split}/{s['image_filename']}": len(s["objects"]) for s in scenes})
    return counts


def test_clevr_labels_are_object_counts(tmp_path: Path) -> None:
    build_clevr(tmp_path)
    folder = tmp_path / "CLEVR_v1.0"
    counts = _scene_counts(folder)
    splits = load_dataset("clevr", tmp_path)
    assert splits.class_names == ["10", "3", "4"]
    for item in splits.train + splits.val + splits.test:
        relative = item.path.relative_to(folder / "images").as_posix()
        assert splits.class_names[item.label] == str(counts[relative])


def test_unknown_dataset_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'cifar10'") as info:
        load_dataset("cifar10", tmp_path)
    assert all(name in str(info.value) for name in DATASETS)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_missing_dataset_folder_names_it(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetError, match="missing folder") as info:
        load_dataset(name, tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_missing_split_file_names_path_and_source(tmp_path: Path, name: str) -> None:
    tree = BUILDERS[name](tmp_path)
    tree.split_file.unlink()  # CLEVR too: a split rebuilt from its scene files is not the published one
    with pytest.raises(DatasetError) as info:
        load_dataset(name, tmp_path)
    message = str(info.value)
    assert str(tree.split_file) in message and tree.split_hint in message
    if tree.split_hint.startswith("split_"):
        assert f"download {tree.split_hint}" in message and f"put it in {tree.split_file.parent}/" in message
        assert ("CoOp" if "zhou" in tree.split_hint else "BlackVIP") in message


@pytest.mark.parametrize("name", list(BUILDERS))
def test_missing_image_folder_or_image_names_it(tmp_path: Path, name: str) -> None:
    tree = BUILDERS[name](tmp_path)
    splits = load_dataset(name, tmp_path)
    if name == "imagenet":  # listed from its folders, not a list file: a missing image is just not listed
        shutil.rmtree(tree.image_root / "val")
        expected = str(tree.image_root / "val")
    else:
        splits.train[0].path.unlink()
        expected = str(splits.train[0].path)
    with pytest.raises(DatasetError, match="missing") as info:
        load_dataset(name, tmp_path)
    assert expected in str(info.value)


def test_missing_image_root_names_it(tmp_path: Path) -> None:
    tree = build_dtd(tmp_path)
    tree.image_root.rename(tmp_path / "dtd" / "elsewhere")
    with pytest.raises(DatasetError, match=f"missing folder {tree.image_root}"):
        load_dataset("dtd", tmp_path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "cannot read JSON"),
        (json.dumps({"train": [], "val": []}), "no 'test' list"),
        (json.dumps({"train": [["a.jpg", "x", "cat"]], "val": [], "test": []}), r"train\[0\]"),
        (
            json.dumps({"train": [["a.jpg", 0, "cat"], ["b.jpg", 0, "dog"]], "val": [], "test": []}),
            "named both",
        ),
        (json.dumps({"train": [["a.jpg", 1, "cat"]], "val": [], "test": []}), r"labels \[0\] have no images"),
    ],
)
def test_malformed_split_file_is_a_dataset_error(tmp_path: Path, content: str, match: str) -> None:
    tree = build_dtd(tmp_path)
    tree.split_file.write_text(content)
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset("dtd", tmp_path)
    assert str(tree.split_file) in str(info.value)


def test_fgvc_unknown_variant_is_an_error(tmp_path: Path) -> None:
    build_fgvc_aircraft(tmp_path)
    with (tmp_path / "fgvc_aircraft" / "images_variant_test.txt").open("a") as handle:
        handle.write("0000001 Spitfire\n")
    with pytest.raises(DatasetError, match="'Spitfire'"):
        load_dataset("fgvc_aircraft", tmp_path)


# --------------------------------------------------------------------------- few-shot protocol


def _synthetic(classes: int = 3, train: int = 20, val: int = 10) -> DatasetSplits:
    def listed(split: str, count: int) -> list[Item]:
        return [Item(Path(f"/data/{split}/{c}/{i}.jpg"), c) for i in range(count) for c in range(classes)]

    return DatasetSplits(
        listed("train", train), listed("val", val), listed("test", 5), [f"c{c}" for c in range(classes)]
    )


def _per_class(items: list[Item]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for item in items:
        counts[item.label] = counts.get(item.label, 0) + 1
    return counts


@pytest.mark.parametrize(("shots", "val_per_class"), [(1, 1), (4, 4), (16, 4)])
def test_few_shot_takes_k_per_class_and_min_k_4_for_val(shots: int, val_per_class: int) -> None:
    splits = _synthetic()
    few = sample_few_shot(splits, shots, seed=1, cache_dir=None)
    assert _per_class(few.train) == {0: shots, 1: shots, 2: shots}
    assert _per_class(few.val) == {0: val_per_class, 1: val_per_class, 2: val_per_class}
    assert few.test == splits.test and few.class_names == splits.class_names
    assert set(few.train) <= set(splits.train) and set(few.val) <= set(splits.val)
    assert len(set(few.train)) == len(few.train)  # no repeats


def test_few_shot_is_deterministic_per_seed() -> None:
    splits = _synthetic()
    first = sample_few_shot(splits, 4, seed=1, cache_dir=None)
    assert sample_few_shot(splits, 4, seed=1, cache_dir=None) == first
    assert sample_few_shot(splits, 4, seed=2, cache_dir=None).train != first.train


def test_few_shot_keeps_small_classes_whole() -> None:
    splits = _synthetic(train=2, val=1)
    few = sample_few_shot(splits, 16, seed=3, cache_dir=None)
    assert few.train == sorted(splits.train, key=lambda item: item.label)
    assert _per_class(few.val) == {0: 1, 1: 1, 2: 1}


def _seed_rule(items: list[Item], shots: int) -> list[Item]:
    """my_dassl's generate_fewshot_dataset, written out: defaultdict grouping (first appearance), then
    the global ``random.sample`` per class; the caller has called ``random.seed``."""
    import random
    from collections import defaultdict

    tracker: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        tracker[item.label].append(item)
    dataset: list[Item] = []
    for members in tracker.values():
        dataset.extend(random.sample(members, shots) if len(members) >= shots else members)
    return dataset


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_few_shot_picks_what_the_seeds_rule_picks(seed: int) -> None:
    import random

    # labels interleaved and out of order, one class smaller than K: order of first appearance matters
    labels = [2, 0, 2, 1, 0, 2, 1, 0, 0, 2, 1, 2, 0, 2, 0, 1, 2, 0, 2, 0, 1]
    train = [Item(Path(f"/d/train/{i}.jpg"), label) for i, label in enumerate(labels)]
    val = [Item(Path(f"/d/val/{i}.jpg"), label) for i, label in enumerate(labels[:12])]
    splits = DatasetSplits(train, val, [], ["a", "b", "c"])
    random.seed(seed)  # the seed's set_random_seed(cfg.SEED), then train, then val from the same stream
    expected_train, expected_val = _seed_rule(train, 5), _seed_rule(val, 4)
    random.seed(12345)  # our draw must not depend on the global stream
    few = sample_few_shot(splits, 5, seed=seed, cache_dir=None)
    assert few.train == expected_train and few.val == expected_val
    assert [item.label for item in few.train][:5] == [2] * 5  # class 2 appears first


PINNED_SEED_1 = ["2.jpg", "0.jpg", "5.jpg", "1.jpg"]


def test_few_shot_seed_1_picks_are_pinned() -> None:
    # Written down once from the rule above (CPython's random.sample): guards the rule against edits.
    items = [Item(Path(f"/d/{i}.jpg"), i % 2) for i in range(10)]
    few = sample_few_shot(DatasetSplits(items, [], [], ["a", "b"]), 2, seed=1, cache_dir=None)
    assert [item.path.name for item in few.train] == PINNED_SEED_1


def test_few_shot_cache_is_written_and_reused(tmp_path: Path) -> None:
    splits = _synthetic()
    cache_dir = tmp_path / "fewshot" / "dtd"
    few = sample_few_shot(splits, 4, seed=7, cache_dir=cache_dir)
    path = cache_path(cache_dir, 4, 7)
    assert path == cache_dir / "shot_4-seed_7.json" and path.is_file()
    assert [p.name for p in cache_dir.iterdir()] == [path.name]  # atomic: no temp file left behind
    data = json.loads(path.read_text())
    assert data["train"] == [[str(item.path), item.label] for item in few.train]
    assert data["val"] == [[str(item.path), item.label] for item in few.val]
    assert sample_few_shot(splits, 4, seed=7, cache_dir=cache_dir) == few

    data["train"] = data["train"][:1]  # the cached file wins, as CoOp's does
    path.write_text(json.dumps(data))
    reused = sample_few_shot(splits, 4, seed=7, cache_dir=cache_dir)
    assert reused.train == few.train[:1] and reused.val == few.val and reused.test == splits.test

    path.unlink()  # deleted: drawn again, identically, and written again
    assert sample_few_shot(splits, 4, seed=7, cache_dir=cache_dir) == few
    assert json.loads(path.read_text())["train"] == [[str(item.path), item.label] for item in few.train]
    assert not cache_path(cache_dir, 4, 8).exists()


def test_few_shot_cache_on_a_loaded_dataset(tmp_path: Path) -> None:
    build_eurosat(tmp_path / "data")
    splits = load_dataset("eurosat", tmp_path / "data")
    few = sample_few_shot(splits, 2, seed=1, cache_dir=tmp_path / "cache")
    assert _per_class(few.train) == {0: 2, 1: 2, 2: 2} and _per_class(few.val) == {0: 2, 1: 2, 2: 2}
    assert all(item.path.is_file() for item in few.train + few.val)
    assert sample_few_shot(splits, 2, seed=1, cache_dir=tmp_path / "cache") == few


@pytest.mark.parametrize(
    "content",
    [
        "{}",
        json.dumps({"sampler": "python-random-v1", "train": [["a.jpg"]], "val": []}),
        json.dumps({"sampler": "python-random-v1", "train": [["a.jpg", 9]], "val": []}),
    ],
)
def test_malformed_few_shot_cache_is_a_dataset_error(tmp_path: Path, content: str) -> None:
    path = cache_path(tmp_path, 4, 1)
    path.write_text(content)
    with pytest.raises(DatasetError, match=str(path)):
        sample_few_shot(_synthetic(), 4, seed=1, cache_dir=tmp_path)


def test_few_shot_needs_at_least_one_shot() -> None:
    with pytest.raises(ValueError, match="shots"):
        sample_few_shot(_synthetic(), 0, seed=1, cache_dir=None)


def test_few_shot_cache_from_another_rule_is_refused(tmp_path: Path) -> None:
    path = cache_path(tmp_path, 4, 1)
    path.write_text(json.dumps({"shots": 4, "seed": 1, "train": [], "val": []}))  # the old numpy draw
    with pytest.raises(DatasetError, match="delete it"):
        sample_few_shot(_synthetic(), 4, seed=1, cache_dir=tmp_path)


# --------------------------------------------------------------------------- base-to-new classes


def test_subsample_base_and_new_follow_cocoops_rule() -> None:
    from client.data.datasets.subsample import subsample_splits

    # 5 classes: base = the first ceil(5 / 2) = 3 labels, new = the last 2, each relabelled from 0
    splits = _synthetic(classes=5, train=2, val=1)
    base = subsample_splits(splits, "base")
    new = subsample_splits(splits, "new")
    assert base.class_names == ["c0", "c1", "c2"] and new.class_names == ["c3", "c4"]
    assert sorted({item.label for item in base.train}) == [0, 1, 2]
    assert [item.path for item in new.test] == [item.path for item in splits.test if item.label >= 3]
    assert {item.label for item in new.test} == {0, 1}
    assert all(
        new.class_names[item.label] == splits.class_names[int(item.path.parent.name)] for item in new.test
    )
    assert subsample_splits(splits, "all") is splits


def test_subsample_uses_the_labels_present_in_train() -> None:
    from client.data.datasets.subsample import kept_labels

    assert kept_labels([4, 1, 1, 7, 9], "base") == [1, 4] and kept_labels([4, 1, 7, 9], "new") == [7, 9]
    with pytest.raises(DatasetError, match="subsample_classes"):
        kept_labels([0, 1], "half")
