"""What every tool of the suite provides, and the context one run gets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.corpus import Corpus

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
BENCH_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class UrlEntry:
    name: str  # the asset's filename (the corpus file name)
    url: str  # a signed nginx URL
    object_name: str  # where the bytes are in storage (the URL's path after /objects/)


@dataclass
class Platform:
    """Where the data is: nginx (always) and the platform API (when the emulator runs)."""

    storage_url: str
    plain_url: str  # the unsigned, indexed view for rclone
    urls: list[UrlEntry]
    url_source: str
    listing_seconds: float | None = None
    api_url: str | None = None
    token: str | None = None
    dataset_version_id: str | None = None


@dataclass
class RunContext:
    corpus: Corpus
    platform: Platform
    dest: Path  # fresh and empty for a first run
    scratch: Path  # config files, URL lists, an isolated HOME
    concurrency: int

    @property
    def large(self) -> bool:
        """Few big files: tools that can split a file into ranged segments should."""
        return self.corpus.spec.size is not None and self.corpus.spec.size >= 64 << 20

    def env(self, **extra: str) -> dict[str, str]:
        home = self.scratch / "home"
        home.mkdir(parents=True, exist_ok=True)
        # A HOME of its own so no tool reads a user's ~/.curlrc, ~/.wget2rc or rclone.conf.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TMPDIR": str(self.scratch),
        }
        env.update(extra)
        return env


@dataclass
class Invocation:
    argv: list[str]
    env: dict[str, str]
    settings: str = ""  # the tuning, for the report


@dataclass
class Tool:
    """A downloader under test. Subclasses fill in :meth:`command`."""

    name: str
    binary: str | None = None  # absolute, or looked up on PATH
    apt_package: str | None = None
    version_args: list[str] = field(default_factory=lambda: ["--version"])
    is_assetsync: bool = False

    def resolved(self) -> str | None:
        if self.binary is None:
            return None
        return self.binary if os.path.isabs(self.binary) else shutil.which(self.binary)

    def missing(self, platform: Platform) -> str | None:
        """Why this tool cannot run here (None: it can)."""
        if self.binary is not None and self.resolved() is None:
            pkg = f" (apt-get install {self.apt_package})" if self.apt_package else ""
            return f"{self.binary} is not installed{pkg}"
        return None

    def version(self) -> str:
        path = self.resolved()
        if path is None:
            return "?"
        try:
            out = subprocess.run(
                [path, *self.version_args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return "?"
        lines = (out.stdout or out.stderr).strip().splitlines()
        if out.returncode != 0 or not lines:
            return "unavailable"
        # "curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/…", "GNU Wget2 1.99.1 - multithreaded …"
        first = re.sub(r" \(x86_64.*", "", lines[0].strip())
        return first.split(" - ", 1)[0]

    def command(self, ctx: RunContext) -> Invocation:
        raise NotImplementedError

    def output_names(self, ctx: RunContext) -> dict[str, str] | None:
        """Corpus file name -> the name this tool gives the file (None: the same names)."""
        return None

    def rerun_command(self, ctx: RunContext) -> Invocation | None:
        """The no-change incremental rerun on an already complete destination, if it has one."""
        return None
