"""``faust.Record`` models as kstreamlet serdes (for apps migrating from Faust; docs/faust-migration.md).

    import faust
    from kstreamlet.serdes_faust import faust_record

    class Order(faust.Record, serializer="json"):
        id: str
        amount: int

    app.stream("orders", value_serde=faust_record(Order))

The bytes are exactly Faust's: ``record.dumps()`` (the model's serializer, by default JSON with
Faust's ``__faust`` namespace field) and ``Model.loads(data)``, so a Faust agent and a kstreamlet
app can share a topic during the migration. Duck-typed on that API (``dumps`` / ``loads``, and
``from_data`` for a plain dict a function returns): ``faust-streaming`` is not imported here and
is no dependency of kstreamlet (``pip install 'kstreamlet[faust]'`` installs it for your models).
"""

from __future__ import annotations

from typing import Any

from kstreamlet.serdes import Serde


def faust_record(model: type, serializer: str | None = None) -> Serde[Any]:
    """A serde for a ``faust.Record`` subclass. ``serializer``: a Faust codec name (``"json"``,
    ``"pickle"``, ``"raw"``, ``"binary"``, ...) overriding the model's own ``serializer``."""
    for attr in ("loads", "from_data"):
        if not callable(getattr(model, attr, None)):
            raise TypeError(f"faust_record() needs a faust.Record class (with {attr}()), got {model!r}")
    loads = model.loads  # type: ignore[attr-defined]
    from_data = model.from_data  # type: ignore[attr-defined]

    def ser(obj: Any) -> bytes:
        if obj is None:
            return None  # type: ignore[return-value]
        if not isinstance(obj, model) and isinstance(obj, dict):
            obj = from_data(obj)
        data = obj.dumps(serializer=serializer) if serializer else obj.dumps()
        return data.encode() if isinstance(data, str) else data  # type: ignore[no-any-return]

    def de(data: bytes) -> Any:
        if data is None:
            return None
        return loads(data, default_serializer=serializer) if serializer else loads(data)

    return Serde(f"faust:{model.__module__}.{model.__qualname__}", ser, de)
