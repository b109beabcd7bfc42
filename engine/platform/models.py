"""Pydantic models of the platform's JSON, as ``/work/shared/platform-api.md`` fixes it.

Unknown fields are ignored (the real platform sends many more than the engine reads), and
everything the contract marks optional or nullable has a default: ``presigned_url`` may be null,
``meta`` may be missing, ``width``/``height`` may be absent (videos, pending uploads, other
implementations of the contract).

The annotation models are the exception: they keep unknown fields (``extra="allow"``), because the
manifest exports annotations "as the API gave them" and the real platform adds fields the
contract does not list (``label_id``, ``area``, ``keypoints``...). ``model_dump()`` gives them back.

Answers are parsed from the response bytes with ``model_validate_json`` (see ``client.py``): that
skips building an intermediate ``dict`` tree and is measurably faster on 1000-asset pages. Its
parser (jiter, in pydantic-core) also bounds what hostile JSON can do: nesting deeper than 201
levels, integers of more than 4300 digits and lone surrogates are refused as invalid JSON, so
nothing parsed here can overflow the recursion of a JSON encoder or a SQLite text column later.

Values the engine puts somewhere that matters are checked here, where they enter:

- ids that go into request paths or headers (:data:`Id`) must be UUID-like tokens: letters,
  digits and ``- _ . ~``, at most 128 characters, not only dots (``..`` in a path would be
  resolved away by the URL library: ``/api/data/..`` is ``/api/``);
- image dimensions must fit the manifest's integer columns (0 to 2**31 - 1);
- counts are not negative, and a cursor is at most 4 KiB (it goes back in a query string).

An asset that breaks one of these fails on its own: see :mod:`engine.platform.per_item`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

__all__ = [
    "Annotation",
    "AnnotationList",
    "Asset",
    "AssetDetail",
    "AssetList",
    "AssetPage",
    "BulkAnnotation",
    "BulkAnnotationList",
    "Classification",
    "Data",
    "DataDetail",
    "DatasetVersion",
    "Id",
    "IdCheck",
    "IdList",
    "IdPage",
    "Line",
    "Meta",
    "Organization",
    "Ping",
    "Point",
    "Polygon",
    "PresignedUrl",
    "Rectangle",
    "Tag",
    "TagList",
]

Number = int | float

# At least one character that is not a dot: "." and ".." are path segments, not names. The
# pattern runs in pydantic-core's regex engine (no look-ahead there), hence its shape.
ID_PATTERN = r"^[A-Za-z0-9_~.-]*[A-Za-z0-9_~-][A-Za-z0-9_~.-]*$"
ID_MAX_LENGTH = 128
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)]
# The manifest stores dimensions in INTEGER columns; no image is 2**31 pixels wide.
MAX_DIMENSION = 2**31 - 1
CURSOR_MAX_LENGTH = 4096


# defer_build: a model's validator is built when it is first used, not at import. A command
# uses a few of these models (a no-change rerun never builds the bulk-annotation family), and
# building all of them cost ~40 ms of every command's start-up.
class _Model(BaseModel):
    # Not frozen: freezing costs a little on every one of 100,000 assets and buys nothing here.
    model_config = ConfigDict(extra="ignore", defer_build=True)


class Tag(_Model):
    id: str
    name: str
    target_type: str | None = None


class TagList(_Model):
    items: list[Tag] = Field(default_factory=list)


class Meta(_Model):
    width: int | None = Field(None, ge=0, le=MAX_DIMENSION)
    height: int | None = Field(None, ge=0, le=MAX_DIMENSION)


class Data(_Model):
    """The immutable content behind an asset: a new upload is a new ``id`` and ``object_name``."""

    id: Id
    object_name: str
    filename: str = ""
    type: str | None = None
    content_type: str | None = None
    upload_status: str | None = None
    presigned_url: str | None = None
    metadata: dict[str, Any] | None = None
    custom_metadata: dict[str, Any] | None = None
    meta: Meta | None = None

    @property
    def width(self) -> int | None:
        return self.meta.width if self.meta is not None else None

    @property
    def height(self) -> int | None:
        return self.meta.height if self.meta is not None else None


class DataDetail(Data):
    """``GET /api/data/{id}``: the data object plus its data tags and datalake."""

    datalake_id: Id | None = None
    tags: list[Tag] = Field(default_factory=list)


class Asset(_Model):
    """An asset as listed: no tags, no size, no checksum (see the contract)."""

    id: Id
    data: Data

    @property
    def data_id(self) -> str:
        return self.data.id

    @property
    def object_name(self) -> str:
        return self.data.object_name

    @property
    def filename(self) -> str:
        return self.data.filename

    @property
    def presigned_url(self) -> str | None:
        return self.data.presigned_url


class AssetDetail(Asset):
    """``GET /api/asset/{id}``: an asset plus its asset tags."""

    tags: list[Tag] = Field(default_factory=list)


class AssetPage(_Model):
    """One page of the cursor listing. ``count`` is the total matching the filter, at the time
    this page was served (the listing is of a live system, so it may change between pages)."""

    items: list[Asset]
    count: int | None = Field(None, ge=0)
    next_cursor: str | None = Field(None, max_length=CURSOR_MAX_LENGTH)


class AssetList(_Model):
    """The ``XGET`` listing by ids: every item carries a freshly signed URL."""

    items: list[Asset]
    count: int | None = None


class IdPage(_Model):
    items: list[str]
    count: int | None = Field(None, ge=0)
    next_cursor: str | None = Field(None, max_length=CURSOR_MAX_LENGTH)

    @property
    def size(self) -> int:
        return len(self.items)


class Ping(_Model):
    sdk_version: str | None = None
    username: str | None = None
    default_organization: Id | None = None  # sent back in a header on every request


class Organization(_Model):
    id: str
    name: str | None = None
    default_connector_id: str | None = None


class DatasetVersion(_Model):
    id: str
    origin_name: str | None = None
    origin_id: str | None = None
    version: str | None = None
    type: str | None = None
    tags: list[Tag] = Field(default_factory=list)


class Annotation(_Model):
    id: str
    asset_id: str
    duration: float | None = None
    status: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class _Shape(BaseModel):
    # Shapes keep what the API gave them (see the module docstring). ``int | float`` in smart
    # mode keeps an integer an integer, so a round trip does not turn 1 into 1.0.
    model_config = ConfigDict(extra="allow", defer_build=True)

    label: str | None = None
    text: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class Rectangle(_Shape):
    x: Number
    y: Number
    w: Number
    h: Number


class Polygon(_Shape):
    polygon: list[list[Number]]


class Line(_Shape):
    line: list[list[Number]]


class Point(_Shape):
    point: list[Number]


class Classification(_Shape):
    pass


class BulkAnnotation(BaseModel):
    """One annotation with its shapes, from ``XGET /api/dataset/version/{dv}/annotations``."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    id: str
    asset_id: str
    status: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    rectangles: list[Rectangle] = Field(default_factory=list)
    polygons: list[Polygon] = Field(default_factory=list)
    classifications: list[Classification] = Field(default_factory=list)
    lines: list[Line] = Field(default_factory=list)
    points: list[Point] = Field(default_factory=list)

    def raw(self) -> dict[str, Any]:
        """The annotation as the API gave it: every field it sent (known or not), and only those
        (no defaults filled in), numbers as they came."""
        return self.model_dump(mode="json", exclude_unset=True)


class PresignedUrl(_Model):
    presigned_url: str


class AnnotationList(_Model):
    items: list[Annotation] = Field(default_factory=list)


# Bare JSON lists (the annotation endpoints answer without an envelope).
BulkAnnotationList: TypeAdapter[list[BulkAnnotation]] = TypeAdapter(
    list[BulkAnnotation], config=ConfigDict(defer_build=True)
)
IdList: TypeAdapter[list[str]] = TypeAdapter(list[str])
IdCheck: TypeAdapter[str] = TypeAdapter(Id)
