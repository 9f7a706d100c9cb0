"""Make the README's SVG screenshots from the real app, from the same scenes as
the snapshot tests (tests/scenes.py).

    python scripts/screenshots.py [--out screenshots] [--size 110x34]

Each scene drives the real ChatApp (headless, through Pilot) against the real
loopback fault server and a fresh database, then saves what is on screen.
No API key is set, so none can appear in a picture.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.scenes import SCENES, SceneRun, frozen_display, scene_dir  # noqa: E402


def shoot(name: str, out: Path, size: tuple[int, int]) -> None:
    run = SceneRun(SCENES[name], scene_dir())  # seeds the database in its own loop

    async def take() -> None:
        async with run.app.run_test(size=size) as pilot:
            await run.run_before(pilot)
            run.app.save_screenshot(filename=f"{name}.svg", path=str(out))

    try:
        asyncio.run(take())
    finally:
        run.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    parser.add_argument("--size", default="110x34", help="COLUMNSxROWS (default 110x34)")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    with frozen_display():
        for name in SCENES:
            shoot(name, args.out, (width, height))
            print(f"wrote {args.out / (name + '.svg')}")


if __name__ == "__main__":
    main()
