"""`make gallery` renders every picture route through a real server."""

import importlib.util
from pathlib import Path

from PIL import Image

GALLERY = Path(__file__).resolve().parents[2] / "bench" / "gallery.py"


def test_gallery_writes_every_picture_route(tmp_path, committed_store, validation_sample):
    spec = importlib.util.spec_from_file_location("gallery", GALLERY)
    assert spec and spec.loader
    gallery = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gallery)
    written = gallery.render(validation_sample[2][0], tmp_path, committed_store.root)
    assert [p.name for p in written] == [name for name, _, _ in gallery.PICTURES]
    for path in written:
        with Image.open(path) as picture:
            assert picture.format == ("GIF" if path.suffix == ".gif" else "PNG") and picture.size[0] >= 640
