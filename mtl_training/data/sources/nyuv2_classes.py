"""NYUv2 class sets: names, palettes and the 40 -> 13 mapping (data tables, cited).

- 40 classes: Gupta, Arbelaez, Malik, "Perceptual Organization and Recognition of Indoor Scenes
  from RGB-D Images", CVPR 2013. The 894 raw classes of `nyu_depth_v2_labeled.mat` map to them
  through `classMapping40.mat` (variable `mapClass`, 894 entries, values 1..40), which ships
  with their toolbox and github.com/ankurhanda/nyuv2-meta-data; users download it with the
  dataset (docs/datasets.md), so that long table is read, not copied here.
- 13 classes: Couprie, Farabet, Najman, LeCun, "Indoor Semantic Segmentation using depth
  information", ICLR 2013, as grouped from the 40 in class13Mapping.mat
  (github.com/ankurhanda/nyuv2-meta-data) and used by MTAN, LibMTL and XTasC-Net.
Raw id 0 (unlabelled) and mapClass 0 become 255 (ignore). Ids here are 0-based.
"""

from __future__ import annotations

NYU40_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)

NYU13_CLASSES: tuple[str, ...] = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa",
    "table", "tv", "wall", "window",
)

# 13-class id (1-based, NYU13_CLASSES order) of each 40-class id 1..40 (class13Mapping.mat)
_NYU40_TO_13_1BASED: tuple[int, ...] = (
    12, 5, 6, 1, 4, 9, 10, 12, 13, 6,  # wall floor cabinet bed chair sofa table door window bkshelf
    8, 6, 13, 10, 6, 13, 6, 7, 7, 5,  # picture counter blinds desk shelves curtain dresser pillow..
    7, 3, 2, 6, 11, 7, 7, 7, 7, 7,  # clothes ceiling books fridge tv paper towel shower-c box board
    7, 6, 7, 7, 7, 7, 7, 7, 6, 7,  # person n-stand toilet sink lamp bathtub bag o-str o-furn o-prop
)
NYU40_TO_13: tuple[int, ...] = tuple(v - 1 for v in _NYU40_TO_13_1BASED)  # 0-based -> 0-based

# colours chosen here (no official palette): 13 well-separated hues; 40 from the core fallback
NYU13_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 255), (232, 88, 47), (0, 217, 0), (148, 0, 240), (222, 241, 23), (255, 205, 205),
    (0, 223, 228), (106, 135, 204), (116, 28, 41), (240, 35, 235), (0, 167, 156),
    (249, 139, 0), (225, 228, 194),
)
