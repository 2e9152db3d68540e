"""Cityscapes label ids -> the 19 evaluated classes and the 7 categories (data tables, cited).

From the dataset's own definition, cityscapesScripts `helpers/labels.py` (Cordts et al., CVPR
2016): each label id 0..33 has a trainId (0..18 for the 19 classes the benchmark scores, 255
for the rest) and a category. The 7-category set is the 19 classes grouped by their category
(flat, construction, object, nature, sky, human, vehicle), as the benchmark's category-level
scores group them: labels it does not score (parking, rail track, guard rail, bridge, tunnel,
polegroup, caravan, trailer, the void labels, license plate -1) are 255 in both sets.
"""

from __future__ import annotations

# label id: (name, trainId, category index in CATEGORIES or 255 for void)
LABELS: dict[int, tuple[str, int, int]] = {
    0: ("unlabeled", 255, 255), 1: ("ego vehicle", 255, 255),
    2: ("rectification border", 255, 255), 3: ("out of roi", 255, 255),
    4: ("static", 255, 255), 5: ("dynamic", 255, 255), 6: ("ground", 255, 255),
    7: ("road", 0, 0), 8: ("sidewalk", 1, 0), 9: ("parking", 255, 0),
    10: ("rail track", 255, 0), 11: ("building", 2, 1), 12: ("wall", 3, 1),
    13: ("fence", 4, 1), 14: ("guard rail", 255, 1), 15: ("bridge", 255, 1),
    16: ("tunnel", 255, 1), 17: ("pole", 5, 2), 18: ("polegroup", 255, 2),
    19: ("traffic light", 6, 2), 20: ("traffic sign", 7, 2), 21: ("vegetation", 8, 3),
    22: ("terrain", 9, 3), 23: ("sky", 10, 4), 24: ("person", 11, 5), 25: ("rider", 12, 5),
    26: ("car", 13, 6), 27: ("truck", 14, 6), 28: ("bus", 15, 6), 29: ("caravan", 255, 6),
    30: ("trailer", 255, 6), 31: ("train", 16, 6), 32: ("motorcycle", 17, 6),
    33: ("bicycle", 18, 6),
}

CLASSES_19: tuple[str, ...] = tuple(
    name for _, (name, train_id, _) in sorted(LABELS.items(), key=lambda kv: kv[1][1])
    if train_id != 255)
CATEGORIES_7: tuple[str, ...] = ("flat", "construction", "object", "nature", "sky", "human",
                                 "vehicle")

# the benchmark's colours (labels.py `color`) of the 19 classes, and of the 7 categories
# (the colour of each category's first class)
PALETTE_19: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
PALETTE_7: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (70, 70, 70), (153, 153, 153), (107, 142, 35), (70, 130, 180),
    (220, 20, 60), (0, 0, 142),
)


def label_lut(num_classes: int) -> list[int]:
    """Class id (255 = ignore) of each label id 0..255 for the 19- or 7-class set."""
    lut = [255] * 256
    for label_id, (_, train_id, category) in LABELS.items():
        if train_id != 255:
            lut[label_id] = train_id if num_classes == 19 else category
    return lut
