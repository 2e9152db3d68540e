"""Label Studio's brush RLE (thi.ng rle-pack), encoded and decoded here without its converter."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_training.labeling import LabelingError
from mtl_training.labeling.label_studio import label_config_xml, rle_decode, rle_encode

# the first bytes of a brush mask in a public Label Studio export (a 3332x2527 image): its
# header must read as 3332 * 2527 * 4 values of 8 bits with count fields of 3, 4, 8, 16 bits
REAL_EXPORT_HEAD = [2, 1, 233, 240, 57, 27, 255, 255, 255, 0, 255, 255, 224, 31, 255, 252]


def _stream(bits: str) -> list[int]:
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


HEADER_8 = "00111" + "0010" + "0011" + "0111" + "1111"  # word 8, counts 3/4/8/16 bits


def test_masks_round_trip_through_the_rle() -> None:
    rng = np.random.default_rng(0)
    noisy = (rng.random((24, 32)) > 0.5).astype(np.uint8) * 255
    block = np.zeros((120, 160), np.uint8)
    block[10:90, 20:150] = 255
    long_run = np.zeros(70000 * 4, np.uint8)  # a run over the 16-bit count field: split
    for values in (np.repeat(noisy.ravel(), 4), np.repeat(block.ravel(), 4), long_run,
                   np.arange(256, dtype=np.uint8), np.zeros(0, np.uint8)):
        rle = rle_encode(values)
        assert all(0 <= b <= 255 for b in rle)
        np.testing.assert_array_equal(rle_decode(rle), values)
    assert len(rle_encode(np.repeat(block.ravel(), 4))) < block.size * 4 // 100  # runs, not pixels


def test_the_header_of_a_real_export_and_literal_chunks_decode() -> None:
    with pytest.raises(LabelingError, match="ends early"):
        rle_decode(REAL_EXPORT_HEAD, "export.json task 1")
    bits = "".join(f"{b:08b}" for b in REAL_EXPORT_HEAD)
    assert int(bits[:32], 2) == 3332 * 2527 * 4 and bits[32:53] == HEADER_8
    # a literal chunk (flag 0: count words follow) then a repeat chunk (flag 1)
    literal = "0" + "00" + "010" + "00000001" + "00000010" + "11111111"
    repeat = "1" + "01" + "0100" + "00000111"  # 5 copies of 7
    rle = _stream(f"{8:032b}" + HEADER_8 + literal + repeat)
    np.testing.assert_array_equal(rle_decode(rle), [1, 2, 255, 7, 7, 7, 7, 7])


@pytest.mark.parametrize(("rle", "message"), [
    ("not a list", "not a list of byte values"),
    ([1, 2, 300, 4, 5, 6, 7], "not a list of byte values"),
    (_stream(f"{8:032b}" + HEADER_8 + "1" + "11" + f"{99:016b}" + "00000000"),
     "runs past its 8 values"),
    (_stream(f"{4:032b}" + "01111" + "0010001101111111"), "words of 16 bits"),
])
def test_damaged_streams_fail_in_one_line(rle: object, message: str) -> None:
    with pytest.raises(LabelingError, match=message) as err:
        rle_decode(rle, "export.json task 3, region 0")  # type: ignore[arg-type]
    assert "\n" not in str(err.value) and str(err.value).startswith("export.json task 3")


def test_label_config_declares_every_class_with_its_colour() -> None:
    xml = label_config_xml(["wall", "R&D <bench>"], [(1, 2, 3), (255, 0, 16)])
    assert '<BrushLabels name="label" toName="image">' in xml
    assert '<Label value="wall" background="#010203"/>' in xml
    assert '<Label value="R&amp;D &lt;bench&gt;" background="#ff0010"/>' in xml


def test_a_mask_becomes_one_brush_region_per_class_and_back() -> None:
    from mtl_training.labeling.label_studio import brush_results, regions_to_ids

    mask = np.full((12, 16), 255, np.uint8)
    mask[:6, :8], mask[6:, 4:], mask[0, 15] = 0, 2, 1
    regions = brush_results(mask, ["floor", "wall", "chair"])
    assert [r["value"]["brushlabels"] for r in regions] == [["floor"], ["wall"], ["chair"]]
    assert {(r["original_width"], r["original_height"]) for r in regions} == {(16, 12)}
    np.testing.assert_array_equal(regions_to_ids("t", regions, ["floor", "wall", "chair"]),
                                  mask)
    assert regions_to_ids("t", [], ["floor"]) is None
    regions[1]["original_width"] = 8  # claims another size than its RLE holds
    with pytest.raises(LabelingError, match="t, region 1: the RLE holds 768 values, a 8x12"):
        regions_to_ids("t", regions, ["floor", "wall", "chair"])
