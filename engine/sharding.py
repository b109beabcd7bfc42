"""Pure: which machine of a multi-machine mirror owns an asset, and which machine this is.

A version too large or too urgent for one machine is mirrored by N processes on N machines, each
given a shard ``K/N`` (0-based ``K``). The orchestrator the user already has starts them: a
Kubernetes Indexed Job or a Slurm job array (``config/k8s/``, ``config/slurm/``).

Partition. An asset belongs to shard :func:`shard_of` ``(asset_id, N)``: a function of its id
alone (BLAKE2b of the UTF-8 id, under its own personalisation so it is independent of the
prefetcher's per-epoch shuffle hash), never of its position in the listing. Every asset is in
exactly one shard however the listing is paged, whatever else is listed and whatever changes
between pages, and the answer is the same in every process, on every machine and Python version
(``hash()`` is salted per process; this is not). The hash picks a shard by jump consistent
hashing (Lamping and Veach, 2014, "A Fast, Minimal Memory, Consistent Hash Algorithm"): when N
grows from ``n`` to ``m`` an asset either stays in its shard or moves to one of the new shards
``n .. m-1``, never between old ones, so only about ``1 - n/m`` of the assets change hands (a plain
``hash % N`` would move almost all of them, and every node with its own disk would download them
again).

Detection. ``--shard auto`` reads the environment:

========================  ==============================  ==========================================
orchestrator              index                           count
========================  ==============================  ==========================================
Kubernetes Indexed Job    ``JOB_COMPLETION_INDEX`` (set   ``ASSETSYNC_SHARD_COUNT``: Kubernetes has
                          by the Job controller)          no variable for ``spec.completions``, so
                                                          the manifest sets this one to the same N
Slurm job array           ``SLURM_ARRAY_TASK_ID``         ``SLURM_ARRAY_TASK_COUNT``; with
                                                          ``SLURM_ARRAY_TASK_MIN`` and ``_STEP``,
                                                          ``K = (ID - MIN) / STEP``
========================  ==============================  ==========================================

Slurm sets ``SLURM_ARRAY_TASK_STEP`` from the number after ``:`` in ``--array`` (1 otherwise) and
MIN / MAX / COUNT from the indexes, so ``--array=1-8`` and ``--array=0-14:2`` map onto shards
``0..7``; an array that is not one arithmetic range (``--array=1,3,4``) cannot and is refused.
Bad input raises :class:`~engine.errors.UsageError` (exit 2) with a one-line message.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from engine.errors import UsageError

__all__ = [
    "COUNT_VARIABLE",
    "MAX_SHARDS",
    "WHOLE",
    "AssetShard",
    "DetectedShard",
    "detect_shard",
    "resolve_shard",
    "shard_of",
]

# More shards than this is a typo, not a cluster (Kubernetes caps an Indexed Job at 100,000).
MAX_SHARDS = 1_000_000
# What a Kubernetes Indexed Job's manifest sets to its spec.completions (see the docstring).
COUNT_VARIABLE = "ASSETSYNC_SHARD_COUNT"

_K8S_INDEX = "JOB_COMPLETION_INDEX"
_SLURM_ID = "SLURM_ARRAY_TASK_ID"
_SLURM_COUNT = "SLURM_ARRAY_TASK_COUNT"
_SLURM_MIN = "SLURM_ARRAY_TASK_MIN"
_SLURM_MAX = "SLURM_ARRAY_TASK_MAX"
_SLURM_STEP = "SLURM_ARRAY_TASK_STEP"

_SPEC = re.compile(r"([0-9]+)/([0-9]+)")
_NUMBER = re.compile(r"-?[0-9]+")
_PERSON = b"assetsync-shard"  # BLAKE2b personalisation: at most 16 bytes
_MASK64 = (1 << 64) - 1
_JUMP_MUL = 2862933555777941757  # the paper's 64-bit linear congruential multiplier


def _jump(key: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit key into ``0 .. buckets-1``.

    The paper's code, step for step: Python's floats are IEEE 754 doubles like C's ``double``,
    and ``int()`` truncates a positive double as C's conversion does, so every platform agrees.
    """
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * _JUMP_MUL + 1) & _MASK64
        jump = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket


def _key(asset_id: str) -> int:
    # surrogatepass: an id that is not valid UTF-8 still gets a shard rather than an error.
    data = asset_id.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(data, digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "big")


def shard_of(asset_id: str, count: int) -> int:
    """The shard (``0 .. count-1``) owning ``asset_id`` when a version is split ``count`` ways."""
    if not 1 <= count <= MAX_SHARDS:
        raise UsageError(f"a shard count must be between 1 and {MAX_SHARDS:,}, got {count}")
    if count == 1:
        return 0
    return _jump(_key(asset_id), count)


@dataclass(frozen=True, slots=True)
class AssetShard:
    """Shard ``index`` of ``count``: the assets :func:`shard_of` gives to ``index``.

    Not :class:`engine.prefetch.split.Shard`, which splits one epoch's *order* by position between
    data-loader workers and ranks; this one splits the *version* by asset id between machines.
    They compose: a node keeps the listed assets its shard holds, the epoch order of those is
    the version's order with the others left out (the shuffle key is per asset), and that order
    is split by position between the node's ranks and workers. Every asset goes to one node,
    then to one worker.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise UsageError(
                f"shard {self.index}/{self.count}: N must be between 1 and {MAX_SHARDS:,}"
            )
        if not 0 <= self.index < self.count:
            raise UsageError(
                f"shard {self.index}/{self.count}: K counts from 0 and must be below N "
                f"(0 to {self.count - 1})"
            )

    @classmethod
    def parse(cls, text: str) -> AssetShard:
        """``"K/N"`` (0-based ``K``), e.g. ``"0/4"`` .. ``"3/4"``."""
        match = _SPEC.fullmatch(text.strip())
        if match is None:
            raise UsageError(f"shard {text!r}: expected K/N with 0 <= K < N (e.g. 0/4), or auto")
        index, count = (int(group) for group in match.groups())
        return cls(index, count)

    @property
    def is_whole(self) -> bool:
        """One shard of one: the whole version, as without sharding."""
        return self.count == 1

    def holds(self, asset_id: str) -> bool:
        return self.count == 1 or shard_of(asset_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# The whole version: one shard of one (a run without --shard).
WHOLE = AssetShard()

Source = Literal["given", "kubernetes", "slurm"]


@dataclass(frozen=True, slots=True)
class DetectedShard:
    """A shard and where it came from, for the run to say (``detail`` names the variables)."""

    shard: AssetShard
    source: Source
    detail: str

    def describe(self) -> str:
        """One line: ``shard 2/8 (Kubernetes Indexed Job: JOB_COMPLETION_INDEX=2, ...)``."""
        return f"shard {self.shard} ({self.detail})"


def resolve_shard(text: str, environ: Mapping[str, str]) -> DetectedShard:
    """``--shard`` as given: ``"K/N"``, or ``"auto"`` to read ``environ`` (:func:`detect_shard`)."""
    if text.strip().lower() == "auto":
        return detect_shard(environ)
    shard = AssetShard.parse(text)
    return DetectedShard(shard, "given", f"given as {shard}")


def detect_shard(environ: Mapping[str, str]) -> DetectedShard:
    """This process's shard from a Kubernetes Indexed Job's or a Slurm array's variables."""
    kubernetes = _K8S_INDEX in environ
    slurm = _SLURM_ID in environ
    if kubernetes and slurm:
        raise UsageError(
            f"--shard auto: both {_K8S_INDEX} (Kubernetes) and {_SLURM_ID} (Slurm) are set; "
            "give the shard as K/N"
        )
    if kubernetes:
        return _kubernetes(environ)
    if slurm:
        return _slurm(environ)
    if COUNT_VARIABLE in environ:
        raise UsageError(
            f"--shard auto: {COUNT_VARIABLE} is set but {_K8S_INDEX} is not; "
            "is the Job's completionMode Indexed?"
        )
    raise UsageError(
        f"--shard auto: no shard in the environment (neither {_K8S_INDEX} of a Kubernetes "
        f"Indexed Job nor {_SLURM_ID} of a Slurm array); give the shard as K/N"
    )


def _integer(environ: Mapping[str, str], name: str) -> int:
    raw = environ[name]
    if _NUMBER.fullmatch(raw.strip()) is None:
        raise UsageError(f"--shard auto: {name}={raw[:40]!r} is not a whole number")
    return int(raw.strip())


def _kubernetes(environ: Mapping[str, str]) -> DetectedShard:
    index = _integer(environ, _K8S_INDEX)
    if COUNT_VARIABLE not in environ:
        raise UsageError(
            f"--shard auto: {_K8S_INDEX}={index} but {COUNT_VARIABLE} is not set; set it in the "
            "Job's container env to the same number as spec.completions"
        )
    count = _integer(environ, COUNT_VARIABLE)
    if count < 1:
        raise UsageError(f"--shard auto: {COUNT_VARIABLE}={count} must be at least 1")
    if not 0 <= index < count:
        raise UsageError(
            f"--shard auto: {_K8S_INDEX}={index} is not between 0 and {count - 1}; set "
            f"{COUNT_VARIABLE} to the Job's spec.completions"
        )
    detail = f"Kubernetes Indexed Job: {_K8S_INDEX}={index}, {COUNT_VARIABLE}={count}"
    return DetectedShard(AssetShard(index, count), "kubernetes", detail)


def _slurm(environ: Mapping[str, str]) -> DetectedShard:
    task = _integer(environ, _SLURM_ID)
    if _SLURM_COUNT not in environ:
        raise UsageError(
            f"--shard auto: {_SLURM_ID}={task} but {_SLURM_COUNT} is not set; give the shard as K/N"
        )
    count = _integer(environ, _SLURM_COUNT)
    if count < 1:
        raise UsageError(f"--shard auto: {_SLURM_COUNT}={count} is not a number of tasks")
    # Slurm sets MIN, MAX and STEP together with COUNT; without them, an array from 0 by 1.
    low = _integer(environ, _SLURM_MIN) if _SLURM_MIN in environ else 0
    step = _integer(environ, _SLURM_STEP) if _SLURM_STEP in environ else 1
    high = _integer(environ, _SLURM_MAX) if _SLURM_MAX in environ else low + step * (count - 1)
    if step < 1 or high != low + step * (count - 1):
        raise UsageError(
            f"--shard auto: the Slurm array is not one range (min {low}, max {high}, step {step}, "
            f"{count} tasks); submit it as --array=A-B or A-B:S, or give the shard as K/N"
        )
    offset = task - low
    if offset % step or not 0 <= offset // step < count:
        raise UsageError(
            f"--shard auto: {_SLURM_ID}={task} is not in the array {low}-{high}:{step}"
        )
    index = offset // step
    detail = f"Slurm array: {_SLURM_ID}={task} of {low}-{high}:{step}, {count} tasks"
    return DetectedShard(AssetShard(index, count), "slurm", detail)
