"""Draw the workbook's own "hand-drawn" test images for SDEdit: rough strokes, as a mouse would make them.

    python tools/draw_digits.py     # writes data/drawn/*.png (32 x 32, white strokes on black, like MNIST)

Each drawing is a few polylines on a 128 x 128 canvas with a 12-pixel pen, slightly wobbly on purpose,
downsampled to 32 x 32. They are the project's own work, so they can be shipped.
"""
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "data" / "drawn"
DRAWINGS = {  # name -> strokes, each a list of (x, y) on the 128 x 128 canvas
    "two": [[(38, 44), (48, 30), (66, 25), (84, 32), (90, 48), (80, 66), (58, 84), (36, 102), (92, 100)]],
    "four": [[(76, 22), (34, 78), (96, 76)], [(78, 24), (74, 108)]],
    "seven": [[(34, 30), (94, 28), (70, 66), (56, 104)]],
    "zero": [[(64, 22), (42, 34), (34, 64), (42, 94), (64, 106), (86, 94), (94, 62), (86, 32), (64, 22)]],
    "house": [[(34, 104), (34, 60), (64, 30), (94, 60), (94, 104), (34, 104)], [(56, 104), (56, 80), (72, 80),
                                                                              (72, 104)]],
}


def draw(strokes) -> Image.Image:
    canvas = Image.new("L", (128, 128), 0)
    pen = ImageDraw.Draw(canvas)
    for stroke in strokes:
        pen.line(stroke, fill=255, width=12, joint="curve")
        for x, y in (stroke[0], stroke[-1]):
            pen.ellipse((x - 6, y - 6, x + 6, y + 6), fill=255)
    return canvas.resize((32, 32), Image.LANCZOS)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, strokes in DRAWINGS.items():
        draw(strokes).save(OUT / f"{name}.png")
        print(OUT / f"{name}.png")
