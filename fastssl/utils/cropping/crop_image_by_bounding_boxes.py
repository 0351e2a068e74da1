"""Cropping the detected objects out of a dataset's images (LightlySSL's
``lightly.utils.cropping.crop_image_by_bounding_boxes``).

Images are read as fastssl reads them everywhere (:mod:`fastssl.data.images`): upright
(EXIF orientation applied, which is also how YOLO tools see them) with 16-bit data scaled
to 8 bits, so the crops hold the pixels a :class:`~fastssl.data.LightlyDataset` delivers.
lightly 1.6 crops the stored pixels; the two agree for images without an EXIF orientation.

Example:
    >>> crops = crop_dataset_by_bounding_boxes_and_save(  # doctest: +SKIP
    ...     LightlyDataset("images/"), "crops/", [[BoundingBox(0.1, 0.1, 0.5, 0.5)]], [[0]],
    ...     class_names=["cat"],
    ... )
    >>> crops  # doctest: +SKIP
    [['img_0/0_cat.jpg']]
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

from PIL import Image
from tqdm import tqdm

from fastssl.data import images
from fastssl.utils.bounding_box import BoundingBox

if TYPE_CHECKING:
    from fastssl.data.dataset import LightlyDataset


def crop_dataset_by_bounding_boxes_and_save(
    dataset: LightlyDataset,
    output_dir: str,
    bounding_boxes_list_list: list[list[BoundingBox]],
    class_indices_list_list: list[list[int]],
    class_names: list[str] | None = None,
) -> list[list[str]]:
    """Crops every bounding box out of its image and saves the crops under ``output_dir``.

    The crops of image ``name.ext`` go to ``output_dir/name/{i}_{class}.ext``: ``i`` is the
    detection's index in the image, ``class`` its class name (``class{index}`` without
    ``class_names``).

    Args:
        dataset: Dataset of M images (filenames relative to its input folder).
        output_dir: Folder the crops are written to.
        bounding_boxes_list_list: M lists, the boxes of every detection of each image.
        class_indices_list_list: M lists, the class index of every detection.
        class_names: Names of the classes, indexed by class index.

    Returns:
        M lists (one per image, in dataset order) of the crops' paths relative to
        ``output_dir``. An image whose box and class lists differ in length is skipped
        with a warning and gets an empty list (lightly 1.6 leaves it out of the result,
        which misaligns the lists after it).

    Raises:
        ValueError: If there are not M box lists and M class-index lists.
    """
    filenames = dataset.get_filenames()
    if not len(filenames) == len(bounding_boxes_list_list) == len(class_indices_list_list):
        raise ValueError(
            "There must be one bounding box and class index list for each image in the "
            f"dataset, but there are {len(filenames)} images, {len(bounding_boxes_list_list)} "
            f"bounding box lists and {len(class_indices_list_list)} class index lists."
        )
    crops_per_image: list[list[str]] = []
    for filename, class_indices, boxes in tqdm(
        zip(filenames, class_indices_list_list, bounding_boxes_list_list, strict=True),
        total=len(filenames),
        desc="Cropping objects",
    ):
        if len(class_indices) != len(boxes):
            warnings.warn(
                f"Length of class indices ({len(class_indices)}) does not equal length of "
                f"bounding boxes ({len(boxes)}). This is an error in the input arguments. "
                f"Skipping this image {filename}.",
                UserWarning,
                stacklevel=2,
            )
            crops_per_image.append([])
            continue
        stem, extension = os.path.splitext(filename)
        os.makedirs(os.path.join(output_dir, stem), exist_ok=True)
        with Image.open(dataset.get_filepath_from_filename(filename)) as opened:
            image = images.normalize(opened)
            width, height = image.size
            crops: list[str] = []
            for index, (class_index, box) in enumerate(zip(class_indices, boxes, strict=True)):
                class_name = class_names[class_index] if class_names else f"class{class_index}"
                crop_name = os.path.join(stem, f"{index}_{class_name}{extension}")
                pixels = (
                    int(width * box.x0),
                    int(height * box.y0),
                    int(width * box.x1),
                    int(height * box.y1),
                )
                image.crop(pixels).save(os.path.join(output_dir, crop_name))
                crops.append(crop_name)
        crops_per_image.append(crops)
    return crops_per_image
